// OFA encoder and decoder layers (spec 3.4-3.6): pre-norm with NormFormer extras.
// Activations are batch-first rows: [batch, tokens, d_model] flattened to [batch*tokens, d].
#pragma once

#include <string>

#include "core/arena.h"
#include "layers/basic.h"

namespace mue {

struct TransformerDims {
  int64_t d_model = 0, heads = 0, ffn_dim = 0;
  float attn_scale_factor = 2.f;
  float eps = 1e-5f;
  bool normformer = true;  // attn_ln / ffn_layernorm / c_attn present (spec 3.1)
  ComputeType compute_type = ComputeType::kF32;  // projections, FFN, attention's products
  int64_t head_dim() const { return d_model / heads; }
  // q scaling (head_dim * attn_scale_factor)^-1/2 (spec 3.5)
  float scaling() const;
};

// Operands of one attention call beyond the projections: the additive bias and the masks.
struct AttentionMasking {
  const float* bias = nullptr;  // [heads, tq, tk] (+ batch stride), row stride bias_row_stride
  int64_t bias_batch_stride = 0;
  int64_t bias_row_stride = 0;
  // Optional: `bias` as its factors [tq, d] . [tk, d]^T per head (kernels::AttentionArgs).
  const float* bias_q = nullptr;
  const float* bias_k = nullptr;
  const uint8_t* key_padding = nullptr;  // [batch, tk]
  int64_t key_padding_stride = 0;
  bool causal = false;
  int64_t causal_offset = 0;
};

// Self-attention projects q, k and v of one input in one GEMM ([q | k | v] rows, 3 d wide; one
// quantisation of the input under int8). Cross-attention keeps them apart: its K and V are
// read as separate [S, d] planes every decoder step (stacked [k | v] rows, twice the stride,
// made that step's attention 11% slower than the stacked GEMM saved).
struct MultiheadAttention {
  Linear qkv_proj;                // self-attention
  Linear q_proj, k_proj, v_proj;  // cross-attention
  Linear out_proj;
  Tensor c_attn;  // [heads] or undefined

  static MultiheadAttention load_self(WeightStore& w, const std::string& prefix,
                                      const TransformerDims& dims);
  static MultiheadAttention load_cross(WeightStore& w, const std::string& prefix,
                                       const TransformerDims& dims);
  size_t weight_bytes() const;
};

// FFN sublayer: y = h + fc2(ffn_layernorm(gelu(fc1(final_layer_norm(h))))).
struct FeedForward {
  LayerNorm final_layer_norm, ffn_layernorm;
  Linear fc1, fc2;
  bool has_ffn_layernorm = false;
  void forward(const float* h, float* y, int64_t rows, Arena& arena) const;
  size_t weight_bytes() const;
};

class EncoderLayer {
 public:
  static EncoderLayer load(WeightStore& w, const std::string& prefix, const TransformerDims& dims);
  size_t weight_bytes() const;
  // x, y: [batch*t, d] (may not alias). Bias shared over the batch unless masking says otherwise.
  void forward(const float* x, float* y, int64_t batch, int64_t t, const AttentionMasking& masking,
               Arena& arena) const;

 private:
  TransformerDims dims_;
  LayerNorm self_attn_layer_norm_, attn_ln_;
  MultiheadAttention self_attn_;
  FeedForward ffn_;
};

// Keys and values for attention, with element strides, so that projections laid out
// [batch, t, d] and caches laid out [batch, heads, t_max, head_dim] are read alike.
struct KeyValueView {
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t batch_stride = 0, head_stride = 0, row_stride = 0;
  int64_t length = 0;
  // Or K and V in bf16 with the same strides (k and v null): see AttentionArgs::k_bf16.
  const uint16_t* k_bf16 = nullptr;
  const uint16_t* v_bf16 = nullptr;
};

class DecoderLayer {
 public:
  static DecoderLayer load(WeightStore& w, const std::string& prefix, const TransformerDims& dims);
  size_t weight_bytes() const;

  // Self-attention sublayer, first half: LN then the projections of x [rows, d] into
  // qkv [rows, 3 d], each row [q | k | v].
  void self_attention_qkv(const float* x, float* normed, float* qkv, int64_t rows) const;
  // Self-attention sublayer, second half: attention over `kv` for queries q [batch, tq] rows
  // `q_row_stride` apart, then out_proj, self_attn_ln and the residual: h = x + ...
  void self_attention_finish(const float* x, const float* q, int64_t q_row_stride,
                             const KeyValueView& kv, int64_t batch, int64_t tq,
                             const AttentionMasking& masking, float* h, Arena& arena) const;
  // Cross-attention K/V of the encoder output [rows, d] (computed once per encode).
  void cross_attention_kv(const float* encoder_states, float* k, float* v, int64_t rows) const;
  // h2 = h + cross_attn_ln(out_proj(attention(encoder_attn_layer_norm(h), kv)))
  void cross_attention(const float* h, const KeyValueView& kv, int64_t batch, int64_t tq,
                       const AttentionMasking& masking, float* h2, Arena& arena) const;
  void feed_forward(const float* h, float* y, int64_t rows, Arena& arena) const;

 private:
  TransformerDims dims_;
  LayerNorm self_attn_layer_norm_, self_attn_ln_, encoder_attn_layer_norm_, cross_attn_ln_;
  MultiheadAttention self_attn_, encoder_attn_;
  FeedForward ffn_;
};

// attention(q [batch, tq] rows of d, q_row_stride apart) over kv, writes [batch, tq, d];
// applies c_attn.
void multihead_attention(const float* q, int64_t q_row_stride, const KeyValueView& kv,
                         int64_t batch, int64_t tq, const TransformerDims& dims,
                         const AttentionMasking& masking, const Tensor& c_attn, float* out);

}  // namespace mue
