#include "layers/transformer.h"

#include <cmath>

#include "core/phase_timer.h"

namespace mue {

using kernels::Activation;

float TransformerDims::scaling() const {
  return 1.f / std::sqrt(static_cast<float>(head_dim()) * attn_scale_factor);
}

MultiheadAttention MultiheadAttention::load_self(WeightStore& w, const std::string& prefix,
                                                 const TransformerDims& dims) {
  MultiheadAttention a;
  const int64_t d = dims.d_model;
  a.qkv_proj = Linear::load_stacked(w, {prefix + ".q_proj", prefix + ".k_proj", prefix + ".v_proj"},
                                    d, d, dims.compute_type);
  a.out_proj = Linear::load(w, prefix + ".out_proj", d, d, true, dims.compute_type);
  if (dims.normformer) a.c_attn = w.get(prefix + ".c_attn", {dims.heads});
  return a;
}

MultiheadAttention MultiheadAttention::load_cross(WeightStore& w, const std::string& prefix,
                                                  const TransformerDims& dims) {
  MultiheadAttention a;
  const int64_t d = dims.d_model;
  a.q_proj = Linear::load(w, prefix + ".q_proj", d, d, true, dims.compute_type);
  a.k_proj = Linear::load(w, prefix + ".k_proj", d, d, true, dims.compute_type);
  a.v_proj = Linear::load(w, prefix + ".v_proj", d, d, true, dims.compute_type);
  a.out_proj = Linear::load(w, prefix + ".out_proj", d, d, true, dims.compute_type);
  if (dims.normformer) a.c_attn = w.get(prefix + ".c_attn", {dims.heads});
  return a;
}

size_t MultiheadAttention::weight_bytes() const {
  return qkv_proj.weight_bytes() + q_proj.weight_bytes() + k_proj.weight_bytes() +
         v_proj.weight_bytes() + out_proj.weight_bytes() + held_bytes(c_attn);
}

size_t FeedForward::weight_bytes() const {
  return final_layer_norm.weight_bytes() + ffn_layernorm.weight_bytes() + fc1.weight_bytes() +
         fc2.weight_bytes();
}

size_t EncoderLayer::weight_bytes() const {
  return self_attn_layer_norm_.weight_bytes() + attn_ln_.weight_bytes() +
         self_attn_.weight_bytes() + ffn_.weight_bytes();
}

size_t DecoderLayer::weight_bytes() const {
  return self_attn_layer_norm_.weight_bytes() + self_attn_ln_.weight_bytes() +
         encoder_attn_layer_norm_.weight_bytes() + cross_attn_ln_.weight_bytes() +
         self_attn_.weight_bytes() + encoder_attn_.weight_bytes() + ffn_.weight_bytes();
}

void multihead_attention(const float* q, int64_t q_row_stride, const KeyValueView& kv,
                         int64_t batch, int64_t tq, const TransformerDims& dims,
                         const AttentionMasking& masking, const Tensor& c_attn, float* out) {
  PhaseScope timed(Phase::kAttention);  // off unless a call asked for its decoder split
  int64_t d = dims.d_model, dh = dims.head_dim();
  kernels::AttentionArgs a;
  a.batch = batch;
  a.heads = dims.heads;
  a.tq = tq;
  a.tk = kv.length;
  a.head_dim = dh;
  a.scale = dims.scaling();
  a.q = q;
  a.q_batch_stride = tq * q_row_stride;
  a.q_head_stride = dh;
  a.q_row_stride = q_row_stride;
  a.k = kv.k;
  a.v = kv.v;
  a.k_batch_stride = a.v_batch_stride = kv.batch_stride;
  a.k_head_stride = a.v_head_stride = kv.head_stride;
  a.k_row_stride = a.v_row_stride = kv.row_stride;
  a.out = out;
  a.out_batch_stride = tq * d;
  a.out_head_stride = dh;
  a.out_row_stride = d;
  a.bias = masking.bias;
  a.bias_batch_stride = masking.bias_batch_stride;
  a.bias_head_stride = tq * masking.bias_row_stride;
  a.bias_row_stride = masking.bias_row_stride;
  a.key_padding = masking.key_padding;
  a.key_padding_stride = masking.key_padding_stride;
  a.causal = masking.causal;
  a.causal_offset = masking.causal_offset;
  a.head_scale = c_attn.raw() ? c_attn.data<float>() : nullptr;
  a.bias_q = masking.bias_q;
  a.bias_k = masking.bias_k;
  a.bf16_products = dims.compute_type != ComputeType::kF32;
  a.k_bf16 = kv.k_bf16;
  a.v_bf16 = kv.v_bf16;
  kernels::attention(a);
}

void FeedForward::forward(const float* h, float* y, int64_t rows, Arena& arena) const {
  const int64_t f = fc1.out;
  float* hidden = arena.floats(static_cast<size_t>(rows * f));
  // Both LayerNorms run inside the linear layers that read them (Linear::forward's norm).
  PhaseScope gemm(Phase::kGemm);
  fc1.forward(h, hidden, rows, Activation::kGelu, {.input_norm = &final_layer_norm});
  fc2.forward(hidden, y, rows, Activation::kNone,
              {.input_norm = has_ffn_layernorm ? &ffn_layernorm : nullptr, .residual = h});
}

namespace {

FeedForward load_ffn(WeightStore& w, const std::string& p, const TransformerDims& dims) {
  FeedForward f;
  f.final_layer_norm = LayerNorm::load(w, p + ".final_layer_norm", dims.d_model, dims.eps);
  f.fc1 = Linear::load(w, p + ".fc1", dims.ffn_dim, dims.d_model, true, dims.compute_type);
  f.fc2 = Linear::load(w, p + ".fc2", dims.d_model, dims.ffn_dim, true, dims.compute_type);
  f.has_ffn_layernorm = dims.normformer;
  if (dims.normformer)
    f.ffn_layernorm = LayerNorm::load(w, p + ".ffn_layernorm", dims.ffn_dim, dims.eps);
  return f;
}

// h = x + post_ln(out_proj(attn))
void attention_output(const MultiheadAttention& mha, const LayerNorm* post_ln, const float* x,
                      const float* attn, float* h, int64_t rows) {
  PhaseScope gemm(Phase::kGemm);
  mha.out_proj.forward(attn, h, rows, Activation::kNone, {.output_norm = post_ln, .residual = x});
}

}  // namespace

EncoderLayer EncoderLayer::load(WeightStore& w, const std::string& p, const TransformerDims& dims) {
  EncoderLayer l;
  l.dims_ = dims;
  l.self_attn_layer_norm_ = LayerNorm::load(w, p + ".self_attn_layer_norm", dims.d_model, dims.eps);
  l.self_attn_ = MultiheadAttention::load_self(w, p + ".self_attn", dims);
  if (dims.normformer) l.attn_ln_ = LayerNorm::load(w, p + ".attn_ln", dims.d_model, dims.eps);
  l.ffn_ = load_ffn(w, p, dims);
  return l;
}

void EncoderLayer::forward(const float* x, float* y, int64_t batch, int64_t t,
                           const AttentionMasking& masking, Arena& arena) const {
  int64_t rows = batch * t, d = dims_.d_model;
  size_t n = static_cast<size_t>(rows * d);
  float* qkv = arena.floats(3 * n);
  float* attn = arena.floats(n);
  float* h = arena.floats(n);
  self_attn_.qkv_proj.forward(x, qkv, rows, Activation::kNone,
                              {.input_norm = &self_attn_layer_norm_});
  KeyValueView kv{qkv + d, qkv + 2 * d, t * 3 * d, dims_.head_dim(), 3 * d, t};
  multihead_attention(qkv, 3 * d, kv, batch, t, dims_, masking, self_attn_.c_attn, attn);
  attention_output(self_attn_, dims_.normformer ? &attn_ln_ : nullptr, x, attn, h, rows);
  ffn_.forward(h, y, rows, arena);
}

DecoderLayer DecoderLayer::load(WeightStore& w, const std::string& p, const TransformerDims& dims) {
  DecoderLayer l;
  l.dims_ = dims;
  int64_t d = dims.d_model;
  l.self_attn_layer_norm_ = LayerNorm::load(w, p + ".self_attn_layer_norm", d, dims.eps);
  l.self_attn_ = MultiheadAttention::load_self(w, p + ".self_attn", dims);
  l.encoder_attn_layer_norm_ = LayerNorm::load(w, p + ".encoder_attn_layer_norm", d, dims.eps);
  l.encoder_attn_ = MultiheadAttention::load_cross(w, p + ".encoder_attn", dims);
  if (dims.normformer) {
    l.self_attn_ln_ = LayerNorm::load(w, p + ".self_attn_ln", d, dims.eps);
    l.cross_attn_ln_ = LayerNorm::load(w, p + ".cross_attn_ln", d, dims.eps);
  }
  l.ffn_ = load_ffn(w, p, dims);
  return l;
}

void DecoderLayer::self_attention_qkv(const float* x, float* normed, float* qkv,
                                      int64_t rows) const {
  self_attn_layer_norm_.forward(x, normed, rows);
  PhaseScope gemm(Phase::kGemm);
  self_attn_.qkv_proj.forward(normed, qkv, rows);
}

void DecoderLayer::self_attention_finish(const float* x, const float* q, int64_t q_row_stride,
                                         const KeyValueView& kv, int64_t batch, int64_t tq,
                                         const AttentionMasking& masking, float* h,
                                         Arena& arena) const {
  int64_t rows = batch * tq;
  float* attn = arena.floats(static_cast<size_t>(rows * dims_.d_model));
  multihead_attention(q, q_row_stride, kv, batch, tq, dims_, masking, self_attn_.c_attn, attn);
  attention_output(self_attn_, dims_.normformer ? &self_attn_ln_ : nullptr, x, attn, h, rows);
}

void DecoderLayer::cross_attention_kv(const float* encoder_states, float* k, float* v,
                                      int64_t rows) const {
  PhaseScope timed(Phase::kCrossKeyValue);
  encoder_attn_.k_proj.forward(encoder_states, k, rows);
  encoder_attn_.v_proj.forward(encoder_states, v, rows);
}

void DecoderLayer::cross_attention(const float* h, const KeyValueView& kv, int64_t batch,
                                   int64_t tq, const AttentionMasking& masking, float* h2,
                                   Arena& arena) const {
  int64_t rows = batch * tq;
  size_t n = static_cast<size_t>(rows * dims_.d_model);
  float* normed = arena.floats(n);
  float* q = arena.floats(n);
  float* attn = arena.floats(n);
  encoder_attn_layer_norm_.forward(h, normed, rows);
  {
    PhaseScope gemm(Phase::kGemm);
    encoder_attn_.q_proj.forward(normed, q, rows);
  }
  multihead_attention(q, dims_.d_model, kv, batch, tq, dims_, masking, encoder_attn_.c_attn, attn);
  attention_output(encoder_attn_, dims_.normformer ? &cross_attn_ln_ : nullptr, h, attn, h2, rows);
}

void DecoderLayer::feed_forward(const float* h, float* y, int64_t rows, Arena& arena) const {
  ffn_.forward(h, y, rows, arena);
}

}  // namespace mue
