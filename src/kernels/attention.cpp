// attention(): per (batch, head, block of query rows) one GEMM for the scores, the bias and
// masks, a row softmax, and one GEMM with V (spec 3.5). Blocking the query rows keeps the score
// block in L2 at 900 image tokens and gives OpenMP enough items when batch * heads is small.
// The GEMMs are oneDNN's sgemm, which reads the strided operands in place and ran 20-25% faster
// than Eigen's at these shapes (60 x 64 x 900) on the 2-core EPYC.
// With bf16_products, on CPUs that multiply bf16 natively, large products (the image stream's)
// run as oneDNN bf16 matmuls instead: Q (scaled), K and V are rounded to bf16 once per call, the
// softmax weights per block, and oneDNN accumulates in fp32 (AMX where the CPU has it).
#include <algorithm>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/dnnl_context.h"
#include "kernels/eigen.h"
#include "kernels/kernels.h"
#include "kernels/quantize.h"
#include "kernels/row_softmax.h"
#include "mue/tensor.h"

namespace mue::kernels {
namespace {

// Query rows per work item: 64 rows x 1000 keys of scores is 256 KB, which stays in L2.
constexpr int64_t kQueryBlock = 64;

// The bf16 path pays for its conversions and per-block primitive calls only on large products.
constexpr int64_t kMinBf16Rows = 32, kMinBf16Keys = 256;

using dnnl::memory;

// A bf16 x bf16 -> f32 product of one work item: scores = Q K^T ([m, k] x [k, n] with K read as
// [n, k] rows) or out = P V (n = head_dim, dst rows ld_dst apart).
struct Bf16ProductKey {
  int64_t m, n, k, ld_dst;
  bool scores;
  int64_t ld_b;  // the row stride of K (scores) or V (P V), in elements
  bool operator==(const Bf16ProductKey&) const = default;
};

struct Bf16ProductKeyHash {
  size_t operator()(const Bf16ProductKey& key) const {
    size_t h = std::hash<int64_t>()(key.m);
    detail::hash_mix(h, std::hash<int64_t>()(key.n));
    detail::hash_mix(h, std::hash<int64_t>()(key.k));
    detail::hash_mix(h, std::hash<int64_t>()(key.ld_dst));
    detail::hash_mix(h, key.scores);
    detail::hash_mix(h, std::hash<int64_t>()(key.ld_b));
    return h;
  }
};

struct Bf16Product {
  dnnl::matmul matmul;
  memory::desc src, weights, dst, scratchpad;
};

// oneDNN's matmul of bf16 operands to an fp32 result in the given layouts, cached per key (a
// model has a handful of shapes; primitive creation costs milliseconds). One cache per key type.
template <typename Key, typename Hash, typename Descs>
const Bf16Product& cached_bf16_product(const Key& key, Descs descs) {
  static std::mutex mutex;
  static std::unordered_map<Key, std::unique_ptr<Bf16Product>, Hash> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = cache[key];
  if (!slot) {
    auto p = std::make_unique<Bf16Product>();
    descs(key, p->src, p->weights, p->dst);
    dnnl::matmul::desc desc(p->src, p->weights, p->dst);
    dnnl::matmul::primitive_desc pd(desc, detail::user_scratchpad_attr(), detail::cpu_engine());
    p->scratchpad = pd.scratchpad_desc();
    p->matmul = dnnl::matmul(pd);
    slot = std::move(p);
  }
  return *slot;
}

void execute_bf16_product(const Bf16Product& p, const uint16_t* a, const uint16_t* b, float* dst) {
  auto& engine = detail::cpu_engine();
  p.matmul.execute(detail::cpu_stream(),
                   {{DNNL_ARG_SRC, memory(p.src, engine, const_cast<uint16_t*>(a))},
                    {DNNL_ARG_WEIGHTS, memory(p.weights, engine, const_cast<uint16_t*>(b))},
                    {DNNL_ARG_DST, memory(p.dst, engine, dst)},
                    {DNNL_ARG_SCRATCHPAD, detail::thread_scratchpad(p.scratchpad)}});
  detail::cpu_stream().wait();
}

void run_bf16_product(const Bf16ProductKey& key, const uint16_t* a, const uint16_t* b, float* dst) {
  using Type = memory::data_type;
  auto descs = [](const Bf16ProductKey& k, memory::desc& src, memory::desc& weights,
                  memory::desc& out) {
    src = memory::desc({k.m, k.k}, Type::bf16, {k.k, 1});
    weights = k.scores ? memory::desc({k.k, k.n}, Type::bf16, {1, k.ld_b})
                       : memory::desc({k.k, k.n}, Type::bf16, {k.ld_b, 1});
    out = memory::desc({k.m, k.n}, Type::f32, {k.ld_dst, 1});
  };
  execute_bf16_product(cached_bf16_product<Bf16ProductKey, Bf16ProductKeyHash>(key, descs), a, b,
                       dst);
}

// Q (times the scale) rounded to bf16, contiguous [outer batch, heads, rows per head, width];
// K and V in bf16 with their strides: rounded here, contiguous [batch, heads, rows, width], or
// the caller's (AttentionArgs::k_bf16, v_bf16). With a factored bias, Q's and K's rows are
// [q | bias_q] and [k | bias_k]: width 2 head_dim.
struct Bf16Operands {
  const uint16_t *q = nullptr, *k = nullptr, *v = nullptr;
  int64_t qk_width = 0, q_rows_per_head = 0;
  int64_t k_batch_stride = 0, k_head_stride = 0, k_row_stride = 0;
  int64_t v_batch_stride = 0, v_head_stride = 0, v_row_stride = 0;
};

// extra: null, or [rows, heads * dh] token-major rows appended to each row (shared by the batch).
void gather_bf16(const float* x, int64_t batch_stride, int64_t head_stride, int64_t row_stride,
                 int64_t batch, int64_t heads, int64_t rows, int64_t dh, float scale,
                 const float* extra, uint16_t* out) {
  const int64_t width = extra != nullptr ? 2 * dh : dh;
  // Row by row, each row's heads in turn: the reads are sequential (token-major projections),
  // where head by head they strode through memory and stalled on every row.
#pragma omp parallel for schedule(static)
  for (int64_t br = 0; br < batch * rows; ++br) {
    const int64_t b = br / rows, r = br % rows;
    for (int64_t h = 0; h < heads; ++h) {
      uint16_t* row = out + ((b * heads + h) * rows + r) * width;
      detail::to_bf16_serial(x + b * batch_stride + h * head_stride + r * row_stride, scale, row,
                             dh);
      if (extra != nullptr)
        detail::to_bf16_serial(extra + r * heads * dh + h * dh, 1.f, row + dh, dh);
    }
  }
}

// Q rows of every head, scaled and rounded, as [outer batch, heads, rows per head, head_dim];
// folded: rows per head are (batch, row) pairs, one outer batch.
void gather_q_bf16(const AttentionArgs& a, bool folded, int64_t rows_per_head, uint16_t* out) {
  const int64_t outer = folded ? 1 : a.batch, dh = a.head_dim;
  for (int64_t ob = 0; ob < outer; ++ob) {
    for (int64_t h = 0; h < a.heads; ++h) {
      for (int64_t r = 0; r < rows_per_head; ++r) {
        const int64_t b = folded ? r / a.tq : ob, i = folded ? r % a.tq : r;
        detail::to_bf16_serial(
            a.q + b * a.q_batch_stride + h * a.q_head_stride + i * a.q_row_stride, a.scale,
            out + ((ob * a.heads + h) * rows_per_head + r) * dh, dh);
      }
    }
  }
}

uint16_t* call_buffer(int slot, int64_t elements) {
  thread_local detail::AlignedScratch buffers[3];
  return static_cast<uint16_t*>(buffers[slot].get(static_cast<size_t>(elements) * 2));
}

uint16_t* thread_weights_bf16(int64_t size) {
  thread_local detail::AlignedScratch weights;
  return static_cast<uint16_t*>(weights.get(static_cast<size_t>(size) * 2));
}

void check_operand(const char* name, const void* data, int64_t rows, int64_t row_stride,
                   int64_t head_dim) {
  if (rows > 0 && data == nullptr) throw Error(std::string("attention: null ") + name);
  if (rows > 1 && row_stride < head_dim) {
    throw Error(std::string("attention: ") + name + " row stride " + std::to_string(row_stride) +
                " is smaller than head_dim " + std::to_string(head_dim));
  }
}

void check_args(const AttentionArgs& a) {
  if (a.batch < 0 || a.heads < 0 || a.tq < 0 || a.tk < 0 || a.head_dim <= 0) {
    throw Error("attention: bad shape batch=" + std::to_string(a.batch) +
                " heads=" + std::to_string(a.heads) + " tq=" + std::to_string(a.tq) +
                " tk=" + std::to_string(a.tk) + " head_dim=" + std::to_string(a.head_dim) +
                " (need head_dim > 0, the rest >= 0)");
  }
  check_operand("q", a.q, a.tq, a.q_row_stride, a.head_dim);
  if (a.k_bf16 != nullptr || a.v_bf16 != nullptr) {
    check_operand("k_bf16", a.k_bf16, a.tk, a.k_row_stride, a.head_dim);
    check_operand("v_bf16", a.v_bf16, a.tk, a.v_row_stride, a.head_dim);
    if (a.k_bf16 == nullptr || a.v_bf16 == nullptr)
      throw Error("attention: k_bf16 and v_bf16 come together");
    if (!attention_native_bf16())
      throw Error("attention: bf16 K/V given, but this CPU has no native bf16 products");
    if (a.bias_q != nullptr || a.bias_k != nullptr)
      throw Error("attention: a factored bias (bias_q, bias_k) needs fp32 K");
  } else {
    check_operand("k", a.k, a.tk, a.k_row_stride, a.head_dim);
    check_operand("v", a.v, a.tk, a.v_row_stride, a.head_dim);
  }
  check_operand("out", a.out, a.tq, a.out_row_stride, a.head_dim);
}

// A single row may come with stride 0; GEMM wants a leading dimension of at least one row.
int64_t leading_dim(int64_t rows, int64_t stride, int64_t row_length) {
  return rows <= 1 ? std::max(stride, row_length) : stride;
}

// Row-major C[m,n] = alpha * op(A) * op(B); false if oneDNN refused.
bool gemm(char trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float* c, int64_t ldc) {
  return dnnl::sgemm('N', trans_b, m, n, k, alpha, a, lda, b, ldb, 0.f, c, ldc) ==
         dnnl::status::success;
}

// Per-thread scratch of the work items, aligned (see detail::AlignedScratch for why).
float* thread_scores(int64_t size) {
  thread_local detail::AlignedScratch scores;
  return static_cast<float*>(scores.get(static_cast<size_t>(size) * sizeof(float)));
}

float* thread_row_factors(int64_t rows) {
  thread_local detail::AlignedScratch factors;
  return static_cast<float*>(factors.get(static_cast<size_t>(rows) * sizeof(float)));
}

// The query rows one work item handles. Normally rows [row_begin, row_begin + rows) of one batch
// entry. When every batch entry reads the same K and V (batch stride 0, e.g. the beams of one
// sentence in cross-attention) and Q/out batches are contiguous, batches are folded into the rows
// (`folded`): row index row_begin + r then means (batch, row) = divmod(row_begin + r, tq), and one
// GEMM serves several batch entries.
struct QueryBlock {
  int64_t batch, head, row_begin, rows;
  bool folded;
};

// One row of scores s [keys] of (batch b, head h, query i) to softmax weights: the bias (unless
// already in the scores), the causal and padding masks, then exp(s - max), in place or as bf16
// into weights_bf16 (when not null). Returns the sum of the weights.
float row_weights(const AttentionArgs& a, int64_t b, int64_t h, int64_t i, bool add_bias, float* s,
                  int64_t keys, uint16_t* weights_bf16) {
  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  const float* bias =
      a.bias != nullptr && add_bias
          ? a.bias + b * a.bias_batch_stride + h * a.bias_head_stride + i * a.bias_row_stride
          : nullptr;
  const uint8_t* padding =
      a.key_padding != nullptr ? a.key_padding + b * a.key_padding_stride : nullptr;
  // Separate simple loops: each vectorises, where one fused loop with branches did not.
  if (bias != nullptr) {
#pragma omp simd
    for (int64_t j = 0; j < keys; ++j) s[j] += bias[j];
  }
  if (a.causal) {  // keys past i + offset are in this row's future
    const int64_t visible = std::clamp<int64_t>(i + a.causal_offset + 1, 0, keys);
    std::fill(s + visible, s + keys, kMasked);
  }
  if (padding != nullptr) {
#pragma omp simd
    for (int64_t j = 0; j < keys; ++j) s[j] = padding[j] != 0 ? kMasked : s[j];
  }
  return weights_bf16 != nullptr
             ? detail::softmax_weights_bf16(s, keys, weights_bf16)
             : detail::exp_shifted_row(s, keys,
                                       Eigen::Map<const Eigen::ArrayXf>(s, keys).maxCoeff());
}

// Returns false if a GEMM failed. bf16: the rounded operands when the bf16 path is taken, else
// null.
bool attend_block(const AttentionArgs& a, const QueryBlock& blk, const Bf16Operands* bf16) {
  const int64_t dh = a.head_dim, h = blk.head, rows = blk.rows, row_begin = blk.row_begin;
  const int64_t b = blk.batch;  // 0 when folded
  float* out =
      a.out + b * a.out_batch_stride + h * a.out_head_stride + row_begin * a.out_row_stride;
  const int64_t out_ld = leading_dim(rows, a.out_row_stride, dh);
  auto batch_of = [&](int64_t r) { return blk.folded ? (row_begin + r) / a.tq : b; };
  auto row_of = [&](int64_t r) { return blk.folded ? (row_begin + r) % a.tq : row_begin + r; };

  // With a causal mask no row of this block sees keys past the latest row's.
  int64_t keys = a.tk;
  if (a.causal) {
    const bool one_batch = !blk.folded || batch_of(0) == batch_of(rows - 1);
    const int64_t latest_row = one_batch ? row_of(rows - 1) : a.tq - 1;
    keys = std::clamp<int64_t>(latest_row + 1 + a.causal_offset, 0, a.tk);
  }
  if (keys == 0) {
    for (int64_t r = 0; r < rows; ++r) std::fill_n(out + r * out_ld, dh, 0.f);
    return true;
  }

  // fp32 operands (null on the bf16 path, whose K/V may be the caller's bf16 only)
  const float* q = bf16 != nullptr ? nullptr
                                   : a.q + b * a.q_batch_stride + h * a.q_head_stride +
                                         row_begin * a.q_row_stride;
  const float* k = bf16 != nullptr ? nullptr : a.k + b * a.k_batch_stride + h * a.k_head_stride;
  const float* v = bf16 != nullptr ? nullptr : a.v + b * a.v_batch_stride + h * a.v_head_stride;
  // bf16: the P V product's dense block follows the scores.
  float* scores = thread_scores(rows * keys + (bf16 != nullptr ? rows * dh : 0));
  const int64_t bf16_head = (b * a.heads + h);  // the head's index in the bf16 Q
  // scores[rows, keys] = scale * Q K^T
  if (bf16 != nullptr) {
    try {
      const int64_t w = bf16->qk_width;
      run_bf16_product({rows, keys, w, keys, true, bf16->k_row_stride},
                       bf16->q + (bf16_head * bf16->q_rows_per_head + row_begin) * w,
                       bf16->k + b * bf16->k_batch_stride + h * bf16->k_head_stride, scores);
    } catch (const dnnl::error&) {
      return false;
    }
  } else if (!gemm('T', rows, keys, dh, a.scale, q, leading_dim(rows, a.q_row_stride, dh), k,
                   leading_dim(keys, a.k_row_stride, dh), scores, keys)) {
    return false;
  }

  // Softmax normalisation and head_scale are applied to the [rows, dh] output rather than to the
  // [rows, keys] weights.
  const float head_scale = a.head_scale != nullptr ? a.head_scale[h] : 1.f;
  float* row_factor = thread_row_factors(rows);
  uint16_t* weights_bf16 = bf16 != nullptr ? thread_weights_bf16(rows * keys) : nullptr;
  const bool bias_folded = bf16 != nullptr && bf16->qk_width == 2 * dh;  // already in the scores
  for (int64_t r = 0; r < rows; ++r) {
    const float sum =
        row_weights(a, batch_of(r), h, row_of(r), !bias_folded, scores + r * keys, keys,
                    weights_bf16 != nullptr ? weights_bf16 + r * keys : nullptr);
    row_factor[r] = sum > 0.f ? head_scale / sum : 0.f;  // all masked: zeros
  }
  // out[rows, dh] = P V, then each row times head_scale / its softmax sum. The bf16 product
  // writes a dense block first: oneDNN gives a strided destination its slower gemm kernel.
  float* product = out;
  int64_t product_ld = out_ld;
  if (bf16 != nullptr) {
    product = scores + rows * keys;
    product_ld = dh;
    try {
      run_bf16_product({rows, dh, keys, dh, false, bf16->v_row_stride}, weights_bf16,
                       bf16->v + b * bf16->v_batch_stride + h * bf16->v_head_stride, product);
    } catch (const dnnl::error&) {
      return false;
    }
  } else if (!gemm('N', rows, dh, keys, 1.f, scores, keys, v, leading_dim(keys, a.v_row_stride, dh),
                   out, out_ld)) {
    return false;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = product + r * product_ld;
    float* o = out + r * out_ld;
    const float factor = row_factor[r];
#pragma omp simd
    for (int64_t d = 0; d < dh; ++d) o[d] = p[d] * factor;
  }
  return true;
}

// A decoding step: a few query rows per head over the caller's bf16 K/V (the cross-attention of
// the beams). All heads of an outer batch entry go in one batched oneDNN product per side: two
// calls a layer, where per-head work items made two per head, and those calls' fixed costs
// outweighed a 5 x 910 product.
constexpr int64_t kMaxBatchedHeadRows = 16;

struct HeadsProductKey {
  int64_t heads, m, n, k, b_head_stride, b_row_stride;
  bool scores;  // Q K^T ([m, k] x K read as [n, k] rows), else P V
  int threads;
  bool operator==(const HeadsProductKey&) const = default;
};

struct HeadsProductKeyHash {
  size_t operator()(const HeadsProductKey& key) const {
    size_t h = std::hash<int64_t>()(key.heads);
    for (int64_t v : {key.m, key.n, key.k, key.b_head_stride, key.b_row_stride})
      detail::hash_mix(h, std::hash<int64_t>()(v));
    detail::hash_mix(h, key.scores);
    detail::hash_mix(h, static_cast<size_t>(key.threads));
    return h;
  }
};

void run_heads_product(const HeadsProductKey& key, const uint16_t* a, const uint16_t* b,
                       float* dst) {
  using Type = memory::data_type;
  auto descs = [](const HeadsProductKey& key, memory::desc& src, memory::desc& weights,
                  memory::desc& out) {
    const int64_t h = key.heads, m = key.m, n = key.n, k = key.k;
    src = memory::desc({h, m, k}, Type::bf16, {m * k, k, 1});
    weights = key.scores
                  ? memory::desc({h, k, n}, Type::bf16, {key.b_head_stride, 1, key.b_row_stride})
                  : memory::desc({h, k, n}, Type::bf16, {key.b_head_stride, key.b_row_stride, 1});
    out = memory::desc({h, m, n}, Type::f32, {m * n, n, 1});
  };
  execute_bf16_product(cached_bf16_product<HeadsProductKey, HeadsProductKeyHash>(key, descs), a, b,
                       dst);
}

// rows: query rows per head (folded: (batch, row) pairs); bf16.q as attention() gathered it.
void attend_heads_batched(const AttentionArgs& a, bool folded, int64_t rows,
                          const Bf16Operands& bf16) {
  const int64_t heads = a.heads, dh = a.head_dim, keys = a.tk, outer = folded ? 1 : a.batch;
  const int threads = detail::current_threads();
  float* scores = thread_scores(heads * rows * (keys + dh));
  float* product = scores + heads * rows * keys;
  uint16_t* weights = thread_weights_bf16(heads * rows * keys);
  float* factor = thread_row_factors(heads * rows);
  for (int64_t ob = 0; ob < outer; ++ob) {
    run_heads_product({heads, rows, keys, dh, bf16.k_head_stride, bf16.k_row_stride, true, threads},
                      bf16.q + ob * heads * rows * dh, bf16.k + ob * bf16.k_batch_stride, scores);
#pragma omp parallel for schedule(static) if (heads * rows * keys >= 16384)
    for (int64_t hr = 0; hr < heads * rows; ++hr) {
      const int64_t h = hr / rows, r = hr % rows;
      const int64_t b = folded ? r / a.tq : ob, i = folded ? r % a.tq : r;
      const float sum =
          row_weights(a, b, h, i, true, scores + hr * keys, keys, weights + hr * keys);
      const float head_scale = a.head_scale != nullptr ? a.head_scale[h] : 1.f;
      factor[hr] = sum > 0.f ? head_scale / sum : 0.f;  // all masked: zeros
    }
    run_heads_product(
        {heads, rows, dh, keys, bf16.v_head_stride, bf16.v_row_stride, false, threads}, weights,
        bf16.v + ob * bf16.v_batch_stride, product);
    for (int64_t hr = 0; hr < heads * rows; ++hr) {
      const int64_t h = hr / rows, r = hr % rows;
      const int64_t b = folded ? r / a.tq : ob, i = folded ? r % a.tq : r;
      float* o = a.out + b * a.out_batch_stride + h * a.out_head_stride + i * a.out_row_stride;
      const float* p = product + hr * dh;
      const float f = factor[hr];
#pragma omp simd
      for (int64_t d = 0; d < dh; ++d) o[d] = p[d] * f;
    }
  }
}

}  // namespace

bool attention_native_bf16() {
  // oneDNN's effective ISA honours ONEDNN_MAX_CPU_ISA; emulated bf16 (avx512_core) is slower
  // than fp32, so only native bf16 counts.
  static const bool native = [] {
    const auto isa = dnnl::get_effective_cpu_isa();
    return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
  }();
  return native;
}

void to_bf16_head_major(const float* x, int64_t batch, int64_t tokens, int64_t heads,
                        int64_t head_dim, uint16_t* y) {
#pragma omp parallel for schedule(static) if (batch * tokens * heads * head_dim >= 65536)
  for (int64_t bt = 0; bt < batch * tokens; ++bt) {
    const int64_t b = bt / tokens, t = bt % tokens;
    for (int64_t h = 0; h < heads; ++h) {
      detail::to_bf16_serial(x + (bt * heads + h) * head_dim, 1.f,
                             y + ((b * heads + h) * tokens + t) * head_dim, head_dim);
    }
  }
}

bool attention_uses_bf16(int64_t tq, int64_t tk) {
  return attention_native_bf16() && tq >= kMinBf16Rows && tk >= kMinBf16Keys;
}

void attention(const AttentionArgs& a) {
  check_args(a);
  if (a.batch == 0 || a.heads == 0 || a.tq == 0) return;
  const bool folded = a.batch > 1 && a.k_batch_stride == 0 && a.v_batch_stride == 0 &&
                      a.q_batch_stride == a.tq * a.q_row_stride &&
                      a.out_batch_stride == a.tq * a.out_row_stride;
  const int64_t outer_batches = folded ? 1 : a.batch;
  const int64_t rows_per_head = folded ? a.batch * a.tq : a.tq;
  // Even blocks (900 rows -> 15 x 60) so the last item is not a short straggler.
  const int64_t nominal_blocks = (rows_per_head + kQueryBlock - 1) / kQueryBlock;
  const int64_t block_rows = (rows_per_head + nominal_blocks - 1) / nominal_blocks;
  const int64_t blocks = (rows_per_head + block_rows - 1) / block_rows;
  const int64_t items = outer_batches * a.heads * blocks;

  Bf16Operands bf16;
  const bool given_bf16 = a.k_bf16 != nullptr;  // check_args: then v_bf16 too, and native bf16
  const bool use_bf16 =
      given_bf16 || (a.bf16_products && !folded && attention_uses_bf16(a.tq, a.tk));
  if (given_bf16) {
    // The caller's K/V (the decoder's cross-attention over the encoder output); Q per head.
    uint16_t* q = call_buffer(0, outer_batches * a.heads * rows_per_head * a.head_dim);
    gather_q_bf16(a, folded, rows_per_head, q);
    bf16 = {q,
            a.k_bf16,
            a.v_bf16,
            a.head_dim,
            rows_per_head,
            a.k_batch_stride,
            a.k_head_stride,
            a.k_row_stride,
            a.v_batch_stride,
            a.v_head_stride,
            a.v_row_stride};
  } else if (use_bf16) {
    const int64_t heads = a.batch * a.heads;
    const bool factored = a.bias_q != nullptr && a.bias_k != nullptr;
    const int64_t width = factored ? 2 * a.head_dim : a.head_dim;
    uint16_t* q = call_buffer(0, heads * a.tq * width);
    uint16_t* k = call_buffer(1, heads * a.tk * width);
    uint16_t* v = call_buffer(2, heads * a.tk * a.head_dim);
    gather_bf16(a.q, a.q_batch_stride, a.q_head_stride, a.q_row_stride, a.batch, a.heads, a.tq,
                a.head_dim, a.scale, factored ? a.bias_q : nullptr, q);
    gather_bf16(a.k, a.k_batch_stride, a.k_head_stride, a.k_row_stride, a.batch, a.heads, a.tk,
                a.head_dim, 1.f, factored ? a.bias_k : nullptr, k);
    gather_bf16(a.v, a.v_batch_stride, a.v_head_stride, a.v_row_stride, a.batch, a.heads, a.tk,
                a.head_dim, 1.f, nullptr, v);
    const int64_t dh = a.head_dim;
    bf16 = {q,
            k,
            v,
            width,
            a.tq,
            a.heads * a.tk * width,
            a.tk * width,
            width,
            a.heads * a.tk * dh,
            a.tk * dh,
            dh};
  }
  if (given_bf16 && rows_per_head <= kMaxBatchedHeadRows) {
    try {
      attend_heads_batched(a, folded, rows_per_head, bf16);
    } catch (const dnnl::error& e) {
      detail::rethrow_dnnl("attention: the heads' bf16 products", e);
    }
    return;
  }
  // Exceptions may not leave an OpenMP region, so failures are counted and reported after it.
  int64_t failures = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : failures) \
    if (items > 1 && a.batch * a.tq * a.tk * a.head_dim > 32768)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t block = item % blocks;
    const int64_t h = (item / blocks) % a.heads;
    const int64_t b = item / (blocks * a.heads);
    const int64_t row_begin = block * block_rows;
    const QueryBlock blk{b, h, row_begin, std::min(block_rows, rows_per_head - row_begin), folded};
    if (!attend_block(a, blk, use_bf16 ? &bf16 : nullptr)) ++failures;
  }
  if (failures > 0) {
    throw Error(std::string("attention: oneDNN ") + (use_bf16 ? "bf16 matmul" : "sgemm") +
                " failed on the Q K^T or P V product");
  }
}

}  // namespace mue::kernels
