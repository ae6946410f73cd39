#include "model/ofa_model.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "kernels/kernels.h"
#include "layers/position.h"

namespace mue {

using kernels::Activation;

namespace {

// OFA builds its token bucket table with the default 1024 positions whatever the model's
// max_source/target_positions (make_token_bucket_position's default argument).
constexpr int64_t kTokenBucketMaxPosition = 1024;

std::string layer_name(const std::string& prefix, int i) {
  return prefix + "." + std::to_string(i);
}

// Rows [first, first+n) of `table` [rows, d], passed through `ln` into out [n, d].
void gather_rows(const Tensor& table, const int64_t* ids, int64_t n, float* out) {
  int64_t d = table.dim(1), rows = table.dim(0);
  const float* src = table.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= rows)
      throw Error("position or token id " + std::to_string(ids[i]) + " outside a table of " +
                  std::to_string(rows) + " rows");
    std::memcpy(out + i * d, src + ids[i] * d, static_cast<size_t>(d) * sizeof(float));
  }
}

}  // namespace

int64_t OfaModel::valid_prefix(const int64_t* tokens, int64_t t, int64_t pad, const char* what,
                               int64_t sample) {
  int64_t n = 0;
  while (n < t && tokens[n] != pad) ++n;
  for (int64_t j = n; j < t; ++j)
    if (tokens[j] != pad)
      throw Error(std::string(what) + ": sample " + std::to_string(sample) +
                  " has a token after padding; sequences must be right-padded");
  return n;
}

std::unique_ptr<OfaModel> OfaModel::load(const std::string& dir, ComputeType compute_type) {
  return load(ModelConfig::load(dir + "/config.json"), dir + "/model.safetensors", compute_type);
}

std::unique_ptr<OfaModel> OfaModel::load(const ModelConfig& config, const std::string& weights_path,
                                         ComputeType compute_type) {
  std::unique_ptr<OfaModel> m(new OfaModel());
  m->config_ = config;
  m->compute_type_ = resolve_compute_type(compute_type);
  if (!compute_type_supported(m->compute_type_))
    throw Error(std::string("compute type ") + compute_type_name(m->compute_type_) +
                " is not supported by oneDNN on this CPU (bf16 needs AVX-512); use f32 or auto");
  m->dims_.compute_type = m->compute_type_;
  m->dims_.d_model = config.d_model;
  m->dims_.heads = config.attention_heads;
  m->dims_.ffn_dim = config.ffn_dim;
  m->dims_.attn_scale_factor = config.attn_scale_factor;
  m->dims_.eps = config.layer_norm_eps;
  m->dims_.normformer = config.normformer;
  m->file_ = SafeTensorsFile::open(weights_path);
  WeightStore w(m->file_);
  m->load_weights(w);
  w.check();
  m->precompute_positions();
  return m;
}

void OfaModel::load_weights(WeightStore& w) {
  const ModelConfig& c = config_;
  int64_t d = c.d_model, h = c.attention_heads;
  float eps = c.layer_norm_eps;
  embed_tokens_ = w.get("encoder.embed_tokens.weight", {c.vocab_size, d});
  // The tied output projection h E^T (spec 3.6), packed once for the decoder's small M.
  output_projection_ =
      kernels::PackedLinear(embed_tokens_.data<float>(), nullptr, c.vocab_size, d, compute_type_);
  // The decoder and the output projection share it (spec 3.7); if a file stores them
  // separately they must be the same tensor, so check their shapes through the store.
  for (const char* alias : {"decoder.embed_tokens.weight", "decoder.output_projection.weight"})
    if (w.contains(alias)) w.get(alias, {c.vocab_size, d});

  enc_layernorm_embedding_ = LayerNorm::load(w, "encoder.layernorm_embedding", d, eps);
  enc_patch_layernorm_embedding_ = LayerNorm::load(w, "encoder.patch_layernorm_embedding", d, eps);
  enc_type_embedding_ = w.get("encoder.type_embedding.weight", {2, d});
  resnet_ = ResNetBackbone::load(w, "encoder.embed_images", c.resnet_layers, c.resnet_width,
                                 compute_type_);
  image_proj_ =
      Linear::load(w, "encoder.image_proj", d, c.image_feature_channels(), true, compute_type_);
  enc_embed_positions_ = w.get("encoder.embed_positions.weight", {c.max_source_positions + 2, d});
  int64_t ib = c.image_bucket_size;
  enc_embed_image_positions_ = w.get("encoder.embed_image_positions.weight", {ib * ib + 1, d});
  enc_pos_ln_ = LayerNorm::load(w, "encoder.pos_ln", d, eps);
  enc_image_pos_ln_ = LayerNorm::load(w, "encoder.image_pos_ln", d, eps);
  enc_pos_q_ = Linear::load(w, "encoder.pos_q_linear", d, d);
  enc_pos_k_ = Linear::load(w, "encoder.pos_k_linear", d, d);
  enc_layer_norm_ = LayerNorm::load(w, "encoder.layer_norm", d, eps);
  int64_t token_table = 2 * c.token_bucket_size - 1;
  int64_t image_table = (2 * ib - 1) * (2 * ib - 1) + 3;
  for (int i = 0; i < c.encoder_layers; ++i) {
    enc_layers_.push_back(EncoderLayer::load(w, layer_name("encoder.layers", i), dims_));
    enc_token_rel_.push_back(
        w.get(layer_name("encoder.token_rel_pos_table_list", i) + ".weight", {token_table, h}));
    enc_image_rel_.push_back(
        w.get(layer_name("encoder.image_rel_pos_table_list", i) + ".weight", {image_table, h}));
  }

  dec_layernorm_embedding_ = LayerNorm::load(w, "decoder.layernorm_embedding", d, eps);
  dec_embed_positions_ = w.get("decoder.embed_positions.weight", {c.max_target_positions + 2, d});
  dec_pos_ln_ = LayerNorm::load(w, "decoder.pos_ln", d, eps);
  dec_self_pos_q_ = Linear::load(w, "decoder.self_pos_q_linear", d, d);
  dec_self_pos_k_ = Linear::load(w, "decoder.self_pos_k_linear", d, d);
  dec_cross_pos_q_ = Linear::load(w, "decoder.cross_pos_q_linear", d, d);
  dec_cross_pos_k_ = Linear::load(w, "decoder.cross_pos_k_linear", d, d);
  dec_layer_norm_ = LayerNorm::load(w, "decoder.layer_norm", d, eps);
  for (int i = 0; i < c.decoder_layers; ++i) {
    dec_layers_.push_back(DecoderLayer::load(w, layer_name("decoder.layers", i), dims_));
    dec_token_rel_.push_back(
        w.get(layer_name("decoder.token_rel_pos_table_list", i) + ".weight", {token_table, h}));
  }

  // Depth comes from the config; a file with more layers than that is a mismatch, not extra data.
  for (const auto& [stack, n] : {std::pair<std::string, int>{"encoder", c.encoder_layers},
                                 std::pair<std::string, int>{"decoder", c.decoder_layers}}) {
    std::string probe = stack + ".layers." + std::to_string(n) + ".fc1.weight";
    if (w.contains(probe))
      throw Error("model weights " + w.path() + ": config.json says " + std::to_string(n) + " " +
                  stack + " layers but the file has " + probe);
  }
}

OfaModel::WeightBytes OfaModel::weight_bytes() const {
  WeightBytes b;
  b.kernels = output_projection_.weight_bytes() + resnet_.weight_bytes() +
              image_proj_.weight_bytes() + enc_pos_q_.weight_bytes() + enc_pos_k_.weight_bytes() +
              dec_self_pos_q_.weight_bytes() + dec_self_pos_k_.weight_bytes() +
              dec_cross_pos_q_.weight_bytes() + dec_cross_pos_k_.weight_bytes();
  for (const EncoderLayer& l : enc_layers_) b.kernels += l.weight_bytes();
  for (const DecoderLayer& l : dec_layers_) b.kernels += l.weight_bytes();
  for (const LayerNorm* n :
       {&enc_layernorm_embedding_, &enc_patch_layernorm_embedding_, &enc_layer_norm_, &enc_pos_ln_,
        &enc_image_pos_ln_, &dec_layernorm_embedding_, &dec_layer_norm_, &dec_pos_ln_})
    b.other += n->weight_bytes();
  for (const Tensor* t :
       {&embed_tokens_, &enc_type_embedding_, &enc_embed_positions_, &enc_embed_image_positions_,
        &dec_embed_positions_, &txt_pos_q_, &txt_pos_k_, &txt_cross_pos_k_, &dec_self_q_,
        &dec_self_k_, &dec_cross_q_})
    b.other += held_bytes(*t);
  for (const auto* tables : {&enc_token_rel_, &enc_image_rel_, &dec_token_rel_})
    for (const Tensor& t : *tables) b.other += held_bytes(t);
  return b;
}

void OfaModel::precompute_positions() {
  int64_t d = config_.d_model;
  float s = dims_.scaling();
  auto project = [&](const Tensor& table, const LayerNorm& ln, int64_t n, const Linear* q_lin,
                     const Linear* k_lin, const Linear* k2_lin, Tensor* q, Tensor* k, Tensor* k2) {
    Tensor normed = Tensor::empty({n, d});
    ln.forward(table.data<float>(), normed.data<float>(), n);
    if (q_lin) {
      *q = Tensor::empty({n, d});
      q_lin->forward(normed.data<float>(), q->data<float>(), n);
      for (int64_t i = 0; i < n * d; ++i) q->data<float>()[i] *= s;
    }
    if (k_lin) {
      *k = Tensor::empty({n, d});
      k_lin->forward(normed.data<float>(), k->data<float>(), n);
    }
    if (k2_lin) {
      *k2 = Tensor::empty({n, d});
      k2_lin->forward(normed.data<float>(), k2->data<float>(), n);
    }
  };
  int64_t ns = config_.max_source_positions;
  project(enc_embed_positions_, enc_pos_ln_, ns, &enc_pos_q_, &enc_pos_k_, &dec_cross_pos_k_,
          &txt_pos_q_, &txt_pos_k_, &txt_cross_pos_k_);
  int64_t nt = config_.max_target_positions;
  project(dec_embed_positions_, dec_pos_ln_, nt, &dec_self_pos_q_, &dec_self_pos_k_, nullptr,
          &dec_self_q_, &dec_self_k_, nullptr);
  Tensor unused;
  project(dec_embed_positions_, dec_pos_ln_, nt, &dec_cross_pos_q_, nullptr, nullptr, &dec_cross_q_,
          nullptr, &unused);
}

const OfaModel::ImageGridCache& OfaModel::image_grid(int64_t gh, int64_t gw) const {
  std::lock_guard<std::mutex> lock(grid_mutex_);
  auto key = std::make_pair(gh, gw);
  auto it = grid_cache_.find(key);
  if (it != grid_cache_.end()) return it->second;
  int64_t ib = config_.image_bucket_size;
  if (gh > ib || gw > ib)
    throw Error("image grid " + std::to_string(gh) + "x" + std::to_string(gw) +
                " exceeds the model's image_bucket_size " + std::to_string(ib));
  int64_t d = config_.d_model, p = gh * gw, heads = config_.attention_heads;
  ImageGridCache g;
  std::vector<int64_t> ids = image_position_ids(gh, gw, ib);
  for (int64_t r = 0; r < gh; ++r)
    for (int64_t c = 0; c < gw; ++c) {
      g.rows.push_back(r);
      g.cols.push_back(c);
    }
  Tensor raw = Tensor::empty({p, d});
  gather_rows(enc_embed_image_positions_, ids.data(), p, raw.data<float>());
  Tensor normed = Tensor::empty({p, d});
  enc_image_pos_ln_.forward(raw.data<float>(), normed.data<float>(), p);
  g.pos_q = Tensor::empty({p, d});
  g.pos_k = Tensor::empty({p, d});
  g.cross_pos_k = Tensor::empty({p, d});
  enc_pos_q_.forward(normed.data<float>(), g.pos_q.data<float>(), p);
  float s = dims_.scaling();
  for (int64_t i = 0; i < p * d; ++i) g.pos_q.data<float>()[i] *= s;
  enc_pos_k_.forward(normed.data<float>(), g.pos_k.data<float>(), p);
  dec_cross_pos_k_.forward(normed.data<float>(), g.cross_pos_k.data<float>(), p);
  g.abs_bias = Tensor::zeros({heads, p, p});
  kernels::add_projected_position_bias(g.pos_q.data<float>(), g.pos_k.data<float>(), p, p, heads,
                                       dims_.head_dim(), g.abs_bias.data<float>(), p);
  return grid_cache_.emplace(key, std::move(g)).first->second;
}

void OfaModel::embed_tokens(const int64_t* tokens, int64_t n, float* out) const {
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= config_.vocab_size)
      throw Error("token id " + std::to_string(tokens[i]) + " is outside the vocabulary of " +
                  std::to_string(config_.vocab_size));
  gather_rows(embed_tokens_, tokens, n, out);
}

void OfaModel::add_text_rel_bias(const Tensor& table, int64_t t, float* bias, int64_t ld,
                                 int64_t q_offset, int64_t k_offset, int64_t tq) const {
  // bias[h, q_offset + i, k_offset + j] += table[bucket(qpos_i - j), h], for query positions
  // qpos_i = (t - tq) + i: the last tq of t positions.
  int64_t heads = config_.attention_heads;
  int64_t rows_per_head = q_offset + tq;
  const float* tab = table.data<float>();
  for (int64_t i = 0; i < tq; ++i) {
    int64_t qpos = t - tq + i;
    for (int64_t j = 0; j < t; ++j) {
      int64_t b = token_rel_bucket(qpos, j, config_.token_bucket_size, kTokenBucketMaxPosition);
      for (int64_t hh = 0; hh < heads; ++hh)
        bias[(hh * rows_per_head + q_offset + i) * ld + k_offset + j] += tab[b * heads + hh];
    }
  }
}

void DecoderState::reorder_rows(const std::vector<int64_t>& src_rows) {
  for (int64_t r : src_rows)
    if (r < 0 || r >= rows())
      throw Error("reorder_rows: source row " + std::to_string(r) + " outside 0.." +
                  std::to_string(rows() - 1));
  std::vector<int64_t> samples(src_rows.size());
  for (size_t i = 0; i < src_rows.size(); ++i) samples[i] = row_sample[src_rows[i]];
  self.reorder(src_rows);
  row_sample = std::move(samples);
}

}  // namespace mue
