// Compute kernels: the only floor that talks to oneDNN. Pointers are fp32, row-major, and
// every kernel is single-call thread-parallel (OpenMP / oneDNN threads, see mue/runtime.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "mue/compute_type.h"

namespace mue::kernels {

enum class Activation { kNone, kRelu, kGelu };

// y[m,n] = act(x[m,k] * w[n,k]^T + bias[n]). Weights in PyTorch layout [N,K]; bias may be null.
// x rows are contiguous with stride k; y rows with stride n. oneDNN primitives are cached per
// (m, n, k, bias, act).
void linear(const float* x, const float* w, const float* bias, float* y, int64_t m, int64_t n,
            int64_t k, Activation act = Activation::kNone);

// A LayerNorm's parameters, for kernels that normalise their input rows themselves; gamma and
// beta may be null (identity), as for layer_norm().
struct RowLayerNorm {
  const float* gamma = nullptr;
  const float* beta = nullptr;
  float eps = 1e-5f;
};

// Row-wise work a linear layer does around its product, each part optional: the input rows
// normalised before it (LN_in), the output rows normalised after bias and activation (LN_out),
// then a residual [m, n] added (it must not alias the output). Under bf16 and int8 an input row is
// normalised while it is converted, and under int8 an output row is finished while its block
// is in cache, so neither LN(x) nor the unnormalised output goes through memory.
struct FusedRows {
  const RowLayerNorm* input_norm = nullptr;
  const RowLayerNorm* output_norm = nullptr;
  const float* residual = nullptr;
};

// linear() with the weights reordered once, at load, into oneDNN's blocked layout. linear()
// repacks PyTorch-layout weights on every call; packing once makes the decoder's small-M calls
// 2-2.6x faster (M=1..5), M=64 7-11% and M=900 4-5% faster (bench/README.md, GEMM).
// The constructor copies weight [N,K] and bias [N] (may be null); the caller's buffers may go.
// forward() may be called from several threads at once.
// `type` (mue/compute_type.h; kAuto is resolved here) is the GEMM's precision: the weights are
// converted once, here; inputs and outputs stay fp32 for the caller. bf16 and int8 outputs
// differ from f32 by their rounding (tests/test_kernels_matmul.cpp states the tolerances).
class PackedLinear {
 public:
  PackedLinear();  // empty: forward() throws
  PackedLinear(const float* weight, const float* bias, int64_t n, int64_t k,
               ComputeType type = ComputeType::kF32);
  ~PackedLinear();
  PackedLinear(PackedLinear&&) noexcept;
  PackedLinear& operator=(PackedLinear&&) noexcept;
  PackedLinear(const PackedLinear&) = delete;
  PackedLinear& operator=(const PackedLinear&) = delete;

  bool empty() const { return impl_ == nullptr; }
  int64_t out_features() const;  // N
  int64_t in_features() const;   // K
  ComputeType compute_type() const;
  // Bytes of packed weights, bias and int8 scales this layer holds.
  size_t weight_bytes() const;
  // y[m,n] = act(x[m,k] * w[n,k]^T + bias[n]); same contract as linear(). With `fused`,
  // y = LN_out(act(LN_in(x) W^T + b)) + residual, the same bits as the separate layer_norm()
  // calls and the add (see FusedRows).
  void forward(const float* x, float* y, int64_t m, Activation act = Activation::kNone,
               const FusedRows& fused = {}) const;

 private:
  struct Impl;
  Impl* impl_;
};

// In-place row-wise LayerNorm over `cols`: y = (x - mean) / sqrt(var + eps) * gamma + beta.
// x and y may alias. gamma/beta may be null (identity).
void layer_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t rows,
                int64_t cols, float eps);

// Exact (erf) GELU, in place.
void gelu(float* x, int64_t n);

// Row-wise softmax in place over `cols`. A row that is all -inf becomes all zeros.
void softmax(float* x, int64_t rows, int64_t cols);

// Multi-head scaled dot-product attention with strided operands (element strides), so that it
// reads [B,T,H*Dh] projections and [B,H,Tmax,Dh] KV caches alike.
//   scores[b,h,i,j] = scale * q[b,h,i,:] . k[b,h,j,:] + bias[b,h,i,j]
//   masked: key_padding[b,j] != 0, or causal and j > i + causal_offset  -> -inf
//   out[b,h,i,:] = head_scale[h] * softmax_j(scores[b,h,i,:]) . v[b,h,j,:]
// A query row whose keys are all masked gets a zero output.
struct AttentionArgs {
  int64_t batch = 1, heads = 1, tq = 0, tk = 0, head_dim = 0;
  float scale = 1.f;

  const float* q = nullptr;
  int64_t q_batch_stride = 0, q_head_stride = 0, q_row_stride = 0;
  const float* k = nullptr;
  int64_t k_batch_stride = 0, k_head_stride = 0, k_row_stride = 0;
  const float* v = nullptr;
  int64_t v_batch_stride = 0, v_head_stride = 0, v_row_stride = 0;
  float* out = nullptr;
  int64_t out_batch_stride = 0, out_head_stride = 0, out_row_stride = 0;

  // Additive bias; batch stride 0 shares one bias across the batch. Null: no bias.
  const float* bias = nullptr;
  int64_t bias_batch_stride = 0, bias_head_stride = 0, bias_row_stride = 0;

  // [batch, tk] with stride key_padding_stride; nonzero = padded key. Null: no padding.
  const uint8_t* key_padding = nullptr;
  int64_t key_padding_stride = 0;

  bool causal = false;
  int64_t causal_offset = 0;

  // Per-head output scale (OFA's c_attn, NormFormer scale_heads). Null: 1.
  const float* head_scale = nullptr;

  // Optional: the same bias as a product per head, bias[h,i,j] = bias_q[i,h,:] . bias_k[j,h,:]
  // ([tq, heads*head_dim] and [tk, heads*head_dim] token-major rows, shared by the batch): OFA's
  // absolute position bias. The bf16 path folds it into its Q K^T product (head_dim doubled)
  // instead of reading `bias`, which must then hold exactly this product and nothing else.
  const float* bias_q = nullptr;
  const float* bias_k = nullptr;

  // Allows QK^T and PV with bf16 operands and fp32 accumulation (the bf16 and int8 compute
  // types). Taken only where the CPU multiplies bf16 natively and the products are large (the
  // image stream's self-attention): elsewhere fp32, so the f32 type never changes.
  bool bf16_products = false;

  // Optional: K and V already rounded to bf16, with k's and v's strides (k and v may then be
  // null): both products run in bf16 whatever their size (the decoder's cross-attention, whose
  // encoder K/V every step reads). Needs attention_native_bf16() and no factored bias.
  const uint16_t* k_bf16 = nullptr;
  const uint16_t* v_bf16 = nullptr;
};
void attention(const AttentionArgs& args);

// Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX, as oneDNN's ISA says).
bool attention_native_bf16();
// Token-major [batch, tokens, heads * head_dim] rounded to bf16 head-major [batch, heads, tokens,
// head_dim]: given K/V in this layout, a decoding step's products over all heads take oneDNN's
// fast kernels (with token-major strides it fell back to a slower one).
void to_bf16_head_major(const float* x, int64_t batch, int64_t tokens, int64_t heads,
                        int64_t head_dim, uint16_t* y);
// Whether attention() with bf16_products takes the bf16 path for a tq x tk product per head:
// native bf16 and a large enough product.
bool attention_uses_bf16(int64_t tq, int64_t tk);

// 2-D convolution, NHWC activations, weights given as PyTorch [O,I,kh,kw] (BatchNorm already
// folded by the caller). Weights are reordered for oneDNN once, at construction or on first use
// per input shape, and primitives are cached per input shape.
// `type` kBF16 stores the weights in bf16 (converted here) and rounds inputs to bf16, with fp32
// accumulation and output; kInt8 runs as bf16 where oneDNN supports bf16, else as f32 (dynamic
// int8 activations would need a per-call range pass over every feature map; kept for later).
class Conv2d {
 public:
  Conv2d(const float* weight, const float* bias, int64_t out_channels, int64_t in_channels,
         int kernel, int stride, int padding, ComputeType type = ComputeType::kF32);
  ~Conv2d();
  Conv2d(Conv2d&&) noexcept;
  Conv2d& operator=(Conv2d&&) noexcept;
  Conv2d(const Conv2d&) = delete;
  Conv2d& operator=(const Conv2d&) = delete;

  int64_t out_extent(int64_t in_extent) const;
  int64_t out_channels() const;
  int64_t in_channels() const;
  // What it runs in: f32, bf16 or int8 (int8 inputs must not be negative: maps after ReLU).
  ComputeType compute_type() const;
  // Bytes of weights (in every layout kept) and bias this convolution holds.
  size_t weight_bytes() const;
  // y[n, ho, wo, O] = act(conv(x[n, h, w, I]) + bias + residual), residual [n, ho, wo, O] or null.
  void forward(const float* x, int64_t n, int64_t h, int64_t w, float* y,
               const float* residual = nullptr, Activation act = Activation::kNone) const;
  // The same with feature maps that may be bf16 (for a convolution that runs in bf16 only):
  // x_bf16, x holds bf16 values; y_bf16, y receives them (then without a residual). Between the
  // convolutions of a bottleneck this skips our rounding pass over the next one's input and
  // halves the traffic; oneDNN rounds its output to nearest even, as our pass does.
  void forward_maps(const void* x, bool x_bf16, int64_t n, int64_t h, int64_t w, void* y,
                    bool y_bf16, const float* residual = nullptr,
                    Activation act = Activation::kNone) const;

 private:
  void forward_int8(const float* x, int64_t n, int64_t h, int64_t w, float* y,
                    const float* residual, Activation act) const;
  struct Impl;
  Impl* impl_;
};

// 3x3 max pooling, stride 2, padding 1 (ResNet stem), NHWC.
void max_pool_3x3_s2(const float* x, int64_t n, int64_t h, int64_t w, int64_t c, float* y);
int64_t max_pool_3x3_s2_extent(int64_t in_extent);

// bias[h, i, j] += dot(q[i, h*dh:(h+1)*dh], k[j, h*dh:(h+1)*dh]) over rows of q [tq, heads*dh]
// and k [tk, heads*dh] (q already scaled): OFA's absolute-position attention bias (spec 3.4).
// bias is [heads, tq, tk] with row stride `ld`.
void add_projected_position_bias(const float* q, const float* k, int64_t tq, int64_t tk,
                                 int64_t heads, int64_t head_dim, float* bias, int64_t ld);

// sum_j exp(x[j] - max) accumulated in double (max: the row's maximum; -inf entries add 0), the
// normaliser of a log-softmax. fp32 exponentials by std::exp, or with `fast`, on CPUs with
// AVX-512 and AVX512-BF16, a vectorised exp (relative error about 2e-7).
double sum_exp_shifted(const float* x, int64_t n, float max, bool fast);

// fp32 cosine similarity of two vectors, accumulated in double. Zero vectors give 0.
double cosine_similarity(const float* a, const float* b, int64_t n);

}  // namespace mue::kernels
