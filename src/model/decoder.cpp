// The decoder (spec 3.6, 1.3): the whole-sequence pass (entailment, parity) and incremental
// decoding over the KV cache, each through the one exit loop.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/phase_timer.h"
#include "kernels/kernels.h"
#include "model/exit_loop.h"
#include "model/ofa_model.h"

namespace mue {
namespace {

// One decoder layer's intermediate rows, for both decoding modes.
struct LayerScratch {
  LayerScratch(Arena& arena, size_t n)
      : normed(arena.floats(n)),
        qkv(arena.floats(3 * n)),
        h1(arena.floats(n)),
        h2(arena.floats(n)) {}
  float *normed, *qkv, *h1, *h2;  // qkv: rows [q | k | v], 3 d wide
};

}  // namespace

Tensor OfaModel::decode_full(const EncoderOutput& enc, const Tensor& prev_tokens,
                             const ExitDecision& decoder_exit, std::vector<int>* decoder_layers,
                             bool last_position_only, Arena* given,
                             const std::vector<int64_t>* confidence_ids) const {
  if (prev_tokens.rank() != 2 || prev_tokens.dtype() != DType::kI64 ||
      prev_tokens.dim(0) != enc.batch)
    throw Error("prev_output_tokens must be int64 [" + std::to_string(enc.batch) +
                ", length], got " + shape_str(prev_tokens.shape()));
  const int64_t batch = enc.batch, t = prev_tokens.dim(1), d = config_.d_model,
                heads = config_.attention_heads, v = config_.vocab_size;
  const int64_t s_len = enc.image_tokens + enc.text_tokens;
  if (t < 1 || t > config_.max_target_positions)
    throw Error("target length " + std::to_string(t) + " is outside 1.." +
                std::to_string(config_.max_target_positions));
  const int64_t* tokens = prev_tokens.data<int64_t>();
  std::vector<ExitGroup> groups;
  for (int64_t b = 0; b < batch; ++b)
    groups.push_back(
        {b, t, valid_prefix(tokens + b * t, t, config_.pad_id, "prev_output_tokens", b), 0});

  CallScratch scratch(given);
  Arena& arena = *scratch;
  const size_t sample = static_cast<size_t>(t * d);
  float* x = arena.floats(batch * sample);
  embed_tokens(tokens, batch * t, x);
  dec_layernorm_embedding_.forward(x, x, batch * t);

  // Self bias [H, T, T] = positions + per-layer relative; cross bias [H, T, S].
  std::vector<float> self_abs(static_cast<size_t>(heads * t * t), 0.f);
  kernels::add_projected_position_bias(dec_self_q_.data<float>(), dec_self_k_.data<float>(), t, t,
                                       heads, dims_.head_dim(), self_abs.data(), t);
  std::vector<float> cross_bias(static_cast<size_t>(heads * t * s_len), 0.f);
  kernels::add_projected_position_bias(dec_cross_q_.data<float>(), enc.cross_pos_k.data<float>(), t,
                                       s_len, heads, dims_.head_dim(), cross_bias.data(), s_len);

  float* self_bias = arena.floats(self_abs.size());
  const LayerScratch buf(arena, batch * sample);
  float* y = arena.floats(batch * sample);
  float* final_h = arena.floats(batch * sample);
  const size_t cross_elems = static_cast<size_t>(s_len * d);
  float* ck = arena.floats(batch * cross_elems);
  float* cv = arena.floats(batch * cross_elems);
  const bool kv_bf16 = cross_kv_bf16();
  uint16_t* ck16 = kv_bf16 ? arena.alloc<uint16_t>(batch * cross_elems) : nullptr;
  uint16_t* cv16 = kv_bf16 ? arena.alloc<uint16_t>(batch * cross_elems) : nullptr;
  std::vector<uint8_t> cross_pad(static_cast<size_t>(batch * s_len));

  LayerStack stack;
  stack.layers = static_cast<int>(dec_layers_.size());
  stack.width = d;
  stack.run_layer = [&](int li, const std::vector<ExitGroup>& active, int64_t rows, const float* in,
                        float* out) {
    const DecoderLayer& layer = dec_layers_[li];
    const int64_t nb = static_cast<int64_t>(active.size());
    std::memcpy(self_bias, self_abs.data(), self_abs.size() * sizeof(float));
    add_text_rel_bias(dec_token_rel_[li], t, self_bias, t, 0, 0, t);
    layer.self_attention_qkv(in, buf.normed, buf.qkv, rows);
    AttentionMasking self_mask;
    self_mask.bias = self_bias;
    self_mask.bias_row_stride = t;
    self_mask.causal = true;
    const KeyValueView self_kv{buf.qkv + d, buf.qkv + 2 * d, t * 3 * d, dims_.head_dim(), 3 * d, t};
    layer.self_attention_finish(in, buf.qkv, 3 * d, self_kv, nb, t, self_mask, buf.h1, arena);
    // Cross K/V only for the samples still running: exited samples cost nothing deeper.
    for (int64_t i = 0; i < nb; ++i) {
      const int64_t s = active[i].id;
      layer.cross_attention_kv(enc.states.data<float>() + s * cross_elems, ck + i * cross_elems,
                               cv + i * cross_elems, s_len);
      std::memcpy(cross_pad.data() + i * s_len, enc.padding.data<uint8_t>() + s * s_len,
                  static_cast<size_t>(s_len));
    }
    AttentionMasking cross_mask;
    cross_mask.bias = cross_bias.data();
    cross_mask.bias_row_stride = s_len;
    cross_mask.key_padding = cross_pad.data();
    cross_mask.key_padding_stride = s_len;
    KeyValueView cross_kv{ck, cv, s_len * d, dims_.head_dim(), d, s_len};
    if (kv_bf16) {
      {
        PhaseScope timed(Phase::kCrossKeyValue);
        kernels::to_bf16_head_major(ck, nb, s_len, heads, dims_.head_dim(), ck16);
        kernels::to_bf16_head_major(cv, nb, s_len, heads, dims_.head_dim(), cv16);
      }
      cross_kv = KeyValueView{nullptr,          nullptr, s_len * d, s_len * dims_.head_dim(),
                              dims_.head_dim(), s_len,   ck16,      cv16};
    }
    layer.cross_attention(buf.h1, cross_kv, nb, t, cross_mask, buf.h2, arena);
    layer.feed_forward(buf.h2, out, rows, arena);
  };
  stack.on_exit = [&](int, const ExitGroup& g, const float* rows) {
    std::memcpy(final_h + g.id * sample, rows, sample * sizeof(float));
  };
  stack.confidence = [&](int, const ExitGroup& g, const float* rows) {
    // The position the task reads: the sample's last valid one.
    return answer_confidence(rows + (g.valid_rows - 1) * d, 1, confidence_ids,
                             decoder_exit.confidence_measure(), arena);
  };
  std::vector<int64_t> valid;
  for (const ExitGroup& g : groups) valid.push_back(g.valid_rows);
  std::vector<int> used = run_with_exits(stack, std::move(groups), x, y, decoder_exit);
  if (decoder_layers) *decoder_layers = std::move(used);

  count_phase_step();
  // The final LayerNorm and the projection read the projection's weights once per pass.
  PhaseScope projection(Phase::kOutputProjection,
                        static_cast<double>(output_projection_.weight_bytes()));
  if (last_position_only) {
    // Scoring tasks need one position per sample: skip the vocabulary projection elsewhere.
    for (int64_t b = 0; b < batch; ++b)
      std::memmove(final_h + b * d, final_h + (b * t + valid[b] - 1) * d,
                   static_cast<size_t>(d) * sizeof(float));
    dec_layer_norm_.forward(final_h, final_h, batch);
    Tensor logits = Tensor::empty({batch, v});
    output_projection_.forward(final_h, logits.data<float>(), batch);
    return logits;
  }
  dec_layer_norm_.forward(final_h, final_h, batch * t);
  Tensor logits = Tensor::empty({batch, t, v});
  output_projection_.forward(final_h, logits.data<float>(), batch * t);
  return logits;
}

double OfaModel::answer_confidence(const float* states, int64_t n, const std::vector<int64_t>* ids,
                                   ConfidenceMeasure measure, Arena& arena) const {
  const int64_t d = config_.d_model;
  const int64_t k = ids ? static_cast<int64_t>(ids->size()) : config_.vocab_size;
  if (k < 1) throw Error("answer confidence: no candidate tokens");
  float* normed = arena.floats(static_cast<size_t>(n * d));
  dec_layer_norm_.forward(states, normed, n);
  float* logits = arena.floats(static_cast<size_t>(n * k));
  if (ids) {
    // A few answer rows of the tied projection: dot products, not the vocabulary GEMM.
    const float* table = embed_tokens_.data<float>();
    for (int64_t r = 0; r < n; ++r)
      for (int64_t i = 0; i < k; ++i) {
        int64_t id = (*ids)[static_cast<size_t>(i)];
        if (id < 0 || id >= config_.vocab_size)
          throw Error("answer confidence: token id " + std::to_string(id) + " is outside 0.." +
                      std::to_string(config_.vocab_size - 1));
        const float* e = table + id * d;
        const float* h = normed + r * d;
        double dot = 0;
        for (int64_t c = 0; c < d; ++c) dot += static_cast<double>(h[c]) * e[c];
        logits[r * k + i] = static_cast<float>(dot);
      }
  } else {
    output_projection_.forward(normed, logits, n);
  }
  double least = 1.0;
  for (int64_t r = 0; r < n; ++r) {
    const float* z = logits + r * k;
    // Softmax in double: top1 = 1 / sum exp(z - max), top2 likewise.
    int64_t best = 0;
    for (int64_t i = 1; i < k; ++i)
      if (z[i] > z[best]) best = i;
    double sum = 0, second = -INFINITY;
    for (int64_t i = 0; i < k; ++i) {
      sum += std::exp(static_cast<double>(z[i]) - z[best]);
      if (i != best) second = std::max(second, static_cast<double>(z[i]));
    }
    double p1 = 1.0 / sum;
    double value = p1;
    if (measure == ConfidenceMeasure::kMargin)
      value = p1 - (k > 1 ? std::exp(second - z[best]) / sum : 0.0);
    least = std::min(least, value);
  }
  return least;
}

bool OfaModel::cross_kv_bf16() const {
  return compute_type_ != ComputeType::kF32 && kernels::attention_native_bf16();
}

DecoderState OfaModel::start_decoding(const EncoderOutput& enc, int64_t beams,
                                      int64_t max_len) const {
  if (beams < 1) throw Error("beams must be at least 1, got " + std::to_string(beams));
  if (max_len < 1 || max_len > config_.max_target_positions)
    throw Error("max_len " + std::to_string(max_len) + " is outside 1.." +
                std::to_string(config_.max_target_positions));
  DecoderState st;
  const int64_t rows = enc.batch * beams;
  st.max_len = max_len;
  st.encoder = &enc;
  for (int64_t b = 0; b < enc.batch; ++b)
    for (int64_t k = 0; k < beams; ++k) st.row_sample.push_back(b);
  const int64_t heads = config_.attention_heads, dh = dims_.head_dim(), d = config_.d_model;
  const int64_t s_len = enc.image_tokens + enc.text_tokens;
  st.self = KvCache(num_decoder_layers(), rows, heads, max_len, dh);
  const bool kv_bf16 = cross_kv_bf16();
  Tensor k32, v32;  // bf16: each layer's fp32 projections, before rounding
  if (kv_bf16) {
    k32 = Tensor::empty({enc.batch, s_len, d});
    v32 = Tensor::empty({enc.batch, s_len, d});
  }
  for (const DecoderLayer& layer : dec_layers_) {
    const DType type = kv_bf16 ? DType::kBF16 : DType::kF32;
    Tensor ck = Tensor::empty({enc.batch, s_len, d}, type);
    Tensor cv = Tensor::empty({enc.batch, s_len, d}, type);
    if (kv_bf16) {
      layer.cross_attention_kv(enc.states.data<float>(), k32.data<float>(), v32.data<float>(),
                               enc.batch * s_len);
      PhaseScope timed(Phase::kCrossKeyValue);
      kernels::to_bf16_head_major(k32.data<float>(), enc.batch, s_len, heads, dh,
                                  static_cast<uint16_t*>(ck.raw()));
      kernels::to_bf16_head_major(v32.data<float>(), enc.batch, s_len, heads, dh,
                                  static_cast<uint16_t*>(cv.raw()));
    } else {
      layer.cross_attention_kv(enc.states.data<float>(), ck.data<float>(), cv.data<float>(),
                               enc.batch * s_len);
    }
    st.cross_k.push_back(std::move(ck));
    st.cross_v.push_back(std::move(cv));
  }
  return st;
}

Tensor OfaModel::decode_step(DecoderState& st, const std::vector<int64_t>& tokens,
                             const ExitDecision& exit, SkippedLayerCache skipped,
                             std::vector<int>* group_layers, Arena* given) const {
  const int64_t rows = st.rows();
  if (static_cast<int64_t>(tokens.size()) != rows)
    throw Error("decode_step: got " + std::to_string(tokens.size()) + " tokens for " +
                std::to_string(rows) + " rows");
  if (st.step >= st.max_len)
    throw Error("decode_step: the cache holds " + std::to_string(st.max_len) +
                " steps and all are used");
  const EncoderOutput& enc = *st.encoder;
  const int64_t d = config_.d_model, heads = config_.attention_heads, dh = dims_.head_dim(),
                v = config_.vocab_size, pos = st.step;
  const int64_t s_len = enc.image_tokens + enc.text_tokens, t1 = pos + 1;
  const int layers = num_decoder_layers();

  // Groups: runs of consecutive rows of one sample; side tables by group id.
  std::vector<ExitGroup> groups;
  std::vector<int64_t> group_sample, group_first_row;
  for (int64_t r = 0; r < rows; ++r)
    if (groups.empty() || st.row_sample[r] != group_sample.back()) {
      groups.push_back({static_cast<int64_t>(groups.size()), 1, 1, 0});
      group_sample.push_back(st.row_sample[r]);
      group_first_row.push_back(r);
    } else {
      ++groups.back().rows;
      ++groups.back().valid_rows;
    }

  CallScratch scratch(given);
  Arena& arena = *scratch;
  const size_t n = static_cast<size_t>(rows * d);
  float* x = arena.floats(n);
  embed_tokens(tokens.data(), rows, x);
  dec_layernorm_embedding_.forward(x, x, rows);
  float* final_h = arena.floats(n);

  // Bias rows of the current position: self [H, t+1] per layer, cross [H, S].
  std::vector<float> self_abs(static_cast<size_t>(heads * t1), 0.f);
  kernels::add_projected_position_bias(dec_self_q_.data<float>() + pos * d,
                                       dec_self_k_.data<float>(), 1, t1, heads, dh, self_abs.data(),
                                       t1);
  std::vector<float> self_bias(self_abs.size());
  std::vector<float> cross_bias(static_cast<size_t>(heads * s_len), 0.f);
  kernels::add_projected_position_bias(dec_cross_q_.data<float>() + pos * d,
                                       enc.cross_pos_k.data<float>(), 1, s_len, heads, dh,
                                       cross_bias.data(), s_len);

  const LayerScratch buf(arena, n);
  float* y = arena.floats(n);

  LayerStack stack;
  stack.layers = layers;
  stack.width = d;
  stack.run_layer = [&](int li, const std::vector<ExitGroup>& active, int64_t active_rows,
                        const float* in, float* out) {
    const DecoderLayer& layer = dec_layers_[li];
    self_bias = self_abs;
    add_text_rel_bias(dec_token_rel_[li], t1, self_bias.data(), t1, 0, 0, 1);
    layer.self_attention_qkv(in, buf.normed, buf.qkv, active_rows);
    for (const ExitGroup& g : active) {
      const int64_t first_row = group_first_row[g.id], sample = group_sample[g.id];
      const float* qkv = buf.qkv + g.offset * 3 * d;
      st.self.append(li, first_row, g.rows, qkv + d, qkv + 2 * d, 3 * d);
      const int64_t tk = st.self.filled(li, first_row);
      // A shorter cache (layers skipped at earlier steps, `reference` mode) takes the bias of
      // the most recent positions: right-aligned, as the released code does (spec 1.3).
      AttentionMasking self_mask;
      self_mask.bias = self_bias.data() + (t1 - tk);
      self_mask.bias_row_stride = t1;
      layer.self_attention_finish(in + g.offset * d, qkv, 3 * d, st.self.view(li, first_row, tk),
                                  g.rows, 1, self_mask, buf.h1 + g.offset * d, arena);
      // Cross-attention: the beams of one sample share its encoder K/V (batch stride 0).
      AttentionMasking cross_mask;
      cross_mask.bias = cross_bias.data();
      cross_mask.bias_row_stride = s_len;
      cross_mask.key_padding = enc.padding.data<uint8_t>() + sample * s_len;
      cross_mask.key_padding_stride = 0;
      KeyValueView ckv{nullptr, nullptr, 0, dh, d, s_len};
      const int64_t sample_offset = sample * s_len * d;
      if (st.cross_k[li].dtype() == DType::kBF16) {  // head-major [batch, heads, S, dh]
        ckv.head_stride = s_len * dh;
        ckv.row_stride = dh;
        ckv.k_bf16 = static_cast<const uint16_t*>(st.cross_k[li].raw()) + sample_offset;
        ckv.v_bf16 = static_cast<const uint16_t*>(st.cross_v[li].raw()) + sample_offset;
      } else {
        ckv.k = st.cross_k[li].data<float>() + sample_offset;
        ckv.v = st.cross_v[li].data<float>() + sample_offset;
      }
      layer.cross_attention(buf.h1 + g.offset * d, ckv, g.rows, 1, cross_mask,
                            buf.h2 + g.offset * d, arena);
    }
    layer.feed_forward(buf.h2, out, active_rows, arena);
  };
  stack.on_exit = [&](int li, const ExitGroup& g, const float* out_rows) {
    const int64_t first_row = group_first_row[g.id];
    std::memcpy(final_h + first_row * d, out_rows, static_cast<size_t>(g.rows * d) * sizeof(float));
    if (li + 1 < layers && skipped == SkippedLayerCache::kPropagate) {
      // CALM-style: the skipped layers see the exited state, so their caches stay aligned.
      // (q is projected too, the price of one stacked GEMM on this rarely taken path)
      float* qkv = arena.floats(static_cast<size_t>(g.rows * 3 * d));
      float* ln = arena.floats(static_cast<size_t>(g.rows * d));
      for (int lj = li + 1; lj < layers; ++lj) {
        dec_layers_[lj].self_attention_qkv(out_rows, ln, qkv, g.rows);
        st.self.append(lj, first_row, g.rows, qkv + d, qkv + 2 * d, 3 * d);
      }
    }
  };
  stack.confidence = [&](int, const ExitGroup& g, const float* rows) {
    return answer_confidence(rows, g.rows, nullptr, exit.confidence_measure(), arena);
  };
  std::vector<int> used = run_with_exits(stack, std::move(groups), x, y, exit);
  if (group_layers) *group_layers = std::move(used);
  ++st.step;
  count_phase_step();
  PhaseScope projection(Phase::kOutputProjection,
                        static_cast<double>(output_projection_.weight_bytes()));
  dec_layer_norm_.forward(final_h, final_h, rows);
  Tensor logits = Tensor::empty({rows, v});
  output_projection_.forward(final_h, logits.data<float>(), rows);
  return logits;
}

}  // namespace mue
