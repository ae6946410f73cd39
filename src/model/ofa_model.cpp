#include "model/ofa_model.h"

#include <algorithm>
#include <cstring>
#include <numeric>

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

// Number of leading non-pad tokens; pads must form a suffix (right padding).
int64_t valid_prefix(const int64_t* tokens, int64_t t, int64_t pad, const char* what,
                     int64_t sample) {
  int64_t n = 0;
  while (n < t && tokens[n] != pad) ++n;
  for (int64_t j = n; j < t; ++j)
    if (tokens[j] != pad)
      throw Error(std::string(what) + ": sample " + std::to_string(sample) +
                  " has a token after padding; sequences must be right-padded");
  return n;
}

}  // namespace

std::unique_ptr<OfaModel> OfaModel::load(const std::string& dir) {
  return load(ModelConfig::load(dir + "/config.json"), dir + "/model.safetensors");
}

std::unique_ptr<OfaModel> OfaModel::load(const ModelConfig& config,
                                         const std::string& weights_path) {
  std::unique_ptr<OfaModel> m(new OfaModel());
  m->config_ = config;
  m->dims_.d_model = config.d_model;
  m->dims_.heads = config.attention_heads;
  m->dims_.ffn_dim = config.ffn_dim;
  m->dims_.attn_scale_factor = config.attn_scale_factor;
  m->dims_.eps = config.layer_norm_eps;
  m->dims_.normformer = config.raw.value("normformer", true);
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
  output_projection_ = kernels::PackedLinear(embed_tokens_.data<float>(), nullptr, c.vocab_size, d);
  // The decoder and the output projection share it (spec 3.7); if a file stores them
  // separately they must be the same tensor, so check their shapes through the store.
  for (const char* alias : {"decoder.embed_tokens.weight", "decoder.output_projection.weight"})
    if (w.contains(alias)) w.get(alias, {c.vocab_size, d});

  enc_layernorm_embedding_ = LayerNorm::load(w, "encoder.layernorm_embedding", d, eps);
  enc_patch_layernorm_embedding_ = LayerNorm::load(w, "encoder.patch_layernorm_embedding", d, eps);
  enc_type_embedding_ = w.get("encoder.type_embedding.weight", {2, d});
  resnet_ = ResNetBackbone::load(w, "encoder.embed_images", c.resnet_layers, c.resnet_width);
  image_proj_ = Linear::load(w, "encoder.image_proj", d, c.image_feature_channels());
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

const OfaModel::ImageGridCache& OfaModel::image_grid(int64_t gh, int64_t gw) {
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
  add_projected_position_bias(g.pos_q.data<float>(), g.pos_k.data<float>(), p, p, heads,
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

void OfaModel::run_stack(float* x, int64_t batch, int64_t t, const uint8_t* key_padding,
                         const std::function<const float*(int layer, float* scratch)>& make_bias,
                         int64_t bias_len, const ExitTest& exit_test, float* out,
                         std::vector<int>& layers_used) {
  int64_t d = config_.d_model;
  size_t sample_elems = static_cast<size_t>(t * d);
  float* y = arena_.floats(static_cast<size_t>(batch) * sample_elems);
  float* bias = bias_len ? arena_.floats(static_cast<size_t>(bias_len)) : nullptr;
  std::vector<uint8_t> pad;
  if (key_padding) pad.assign(key_padding, key_padding + batch * t);
  std::vector<int64_t> active(static_cast<size_t>(batch));
  std::iota(active.begin(), active.end(), 0);
  std::vector<int64_t> valid(static_cast<size_t>(batch), t);
  if (key_padding)
    for (int64_t b = 0; b < batch; ++b)
      valid[b] = std::count(key_padding + b * t, key_padding + (b + 1) * t, uint8_t{0});
  layers_used.assign(static_cast<size_t>(batch), 0);

  int layers = static_cast<int>(enc_layers_.size());
  float* cur = x;
  float* nxt = y;
  for (int l = 0; l < layers; ++l) {
    int64_t nb = static_cast<int64_t>(active.size());
    AttentionMasking m;
    m.bias = make_bias(l, bias);
    m.bias_row_stride = t;
    m.key_padding = pad.empty() ? nullptr : pad.data();
    m.key_padding_stride = t;
    enc_layers_[l].forward(cur, nxt, nb, t, m, arena_);
    bool last = l + 1 == layers;
    std::vector<bool> stop(static_cast<size_t>(nb), last);
    if (!last && exit_test)
      for (int64_t i = 0; i < nb; ++i) {
        // One cosine over the sample's whole (unpadded) tensor (spec 1.2.4).
        double cos = kernels::cosine_similarity(nxt + i * sample_elems, cur + i * sample_elems,
                                                valid[active[i]] * d);
        stop[i] = exit_test(l, active[i], cos);
      }
    int64_t keep = 0;
    for (int64_t i = 0; i < nb; ++i) {
      int64_t s = active[i];
      const float* yi = nxt + i * sample_elems;
      if (stop[i]) {
        std::memcpy(out + s * sample_elems, yi, sample_elems * sizeof(float));
        layers_used[s] = l + 1;
      } else {
        // Exited samples leave the batch: the next layer computes only the rest.
        std::memcpy(cur + keep * sample_elems, yi, sample_elems * sizeof(float));
        if (!pad.empty() && keep != i)
          std::memmove(pad.data() + keep * t, pad.data() + i * t, static_cast<size_t>(t));
        active[keep++] = s;
      }
    }
    active.resize(static_cast<size_t>(keep));
    if (active.empty()) break;
  }
}

Tensor OfaModel::image_features(const Tensor& images) {
  if (images.rank() != 4 || images.dim(3) != 3)
    throw Error("images must be [batch, height, width, 3] NHWC, got " + shape_str(images.shape()));
  int64_t b = images.dim(0), h = images.dim(1), w = images.dim(2);
  auto [gh, gw] = resnet_.grid(h, w);
  Tensor out = Tensor::empty({b, gh * gw, resnet_.out_channels()});
  ArenaScope scope(arena_);
  resnet_.forward(images.data<float>(), b, h, w, out.data<float>(), arena_);
  return out;
}

void OfaModel::embed_images(const Tensor& images, float* out, int64_t* grid_h, int64_t* grid_w,
                            StageTimes* times) {
  Stopwatch watch;
  Tensor features = image_features(images);  // [B, P, C]
  if (times) times->resnet += watch.lap();
  auto [gh, gw] = resnet_.grid(images.dim(1), images.dim(2));
  *grid_h = gh;
  *grid_w = gw;
  int64_t rows = features.dim(0) * features.dim(1), d = config_.d_model;
  // image_proj + type 1, then the patch LayerNorm (spec 3.4).
  image_proj_.forward(features.data<float>(), out, rows);
  const float* type_img = enc_type_embedding_.data<float>() + d;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t e = 0; e < d; ++e) out[r * d + e] += type_img[e];
  enc_patch_layernorm_embedding_.forward(out, out, rows);
  if (times) times->image_stream += watch.lap();
}

ImageEncoding OfaModel::encode_images(const Tensor& images, const ExitTest& image_exit,
                                      StageTimes* times) {
  if (config_.encoder_mode != EncoderMode::kDecomposed)
    throw Error("encode_images: the image stream stands alone only in the decomposed encoder");
  if (images.rank() != 4 || images.dim(3) != 3)
    throw Error("images must be [batch, height, width, 3] NHWC, got " + shape_str(images.shape()));
  int64_t batch = images.dim(0), d = config_.d_model;
  auto [gh0, gw0] = resnet_.grid(images.dim(1), images.dim(2));
  int64_t p = gh0 * gw0;
  ImageEncoding enc;
  enc.states = Tensor::empty({batch, p, d});
  ArenaScope scope(arena_);
  float* img = arena_.floats(static_cast<size_t>(batch * p * d));
  embed_images(images, img, &enc.grid_h, &enc.grid_w, times);
  const ImageGridCache& grid = image_grid(enc.grid_h, enc.grid_w);
  Stopwatch watch;
  // The image stream uses the absolute bias only, as the released MuE code does (spec 1.2).
  run_stack(
      img, batch, p, nullptr, [&](int, float*) { return grid.abs_bias.data<float>(); }, 0,
      image_exit, enc.states.data<float>(), enc.layers);
  if (times) times->image_stream += watch.lap();
  return enc;
}

std::vector<uint8_t> OfaModel::text_padding(const Tensor& src_tokens) const {
  if (src_tokens.rank() != 2 || src_tokens.dtype() != DType::kI64)
    throw Error("src_tokens must be an int64 [batch, length] tensor, got " +
                std::string(dtype_name(src_tokens.dtype())) + " " + shape_str(src_tokens.shape()));
  int64_t batch = src_tokens.dim(0), l = src_tokens.dim(1);
  if (l < 1 || l > config_.max_source_positions)
    throw Error("text length " + std::to_string(l) + " is outside 1.." +
                std::to_string(config_.max_source_positions));
  std::vector<uint8_t> pad(static_cast<size_t>(batch * l));
  for (int64_t b = 0; b < batch; ++b) {
    int64_t n =
        valid_prefix(src_tokens.data<int64_t>() + b * l, l, config_.pad_id, "src_tokens", b);
    if (n == 0) throw Error("src_tokens: sample " + std::to_string(b) + " is empty (all padding)");
    for (int64_t j = 0; j < l; ++j) pad[b * l + j] = j >= n;
  }
  return pad;
}

void OfaModel::embed_text(const Tensor& src_tokens, const std::vector<uint8_t>& pad, float* out) {
  int64_t rows = src_tokens.numel(), d = config_.d_model;
  // Tokens (scale 1) + type 0, LayerNorm, pad positions zeroed (spec 3.4).
  embed_tokens(src_tokens.data<int64_t>(), rows, out);
  const float* type_txt = enc_type_embedding_.data<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t e = 0; e < d; ++e) out[r * d + e] += type_txt[e];
  enc_layernorm_embedding_.forward(out, out, rows);
  for (int64_t r = 0; r < rows; ++r)
    if (pad[r]) std::memset(out + r * d, 0, static_cast<size_t>(d) * sizeof(float));
}

EncoderOutput OfaModel::make_encoder_output(int64_t batch, int64_t p, int64_t l,
                                            const ImageGridCache& grid,
                                            const std::vector<uint8_t>& text_pad) const {
  int64_t d = config_.d_model, s_len = p + l;
  EncoderOutput out;
  out.batch = batch;
  out.image_tokens = p;
  out.text_tokens = l;
  out.states = Tensor::empty({batch, s_len, d});
  out.padding = Tensor::zeros({batch, s_len}, DType::kU8);
  for (int64_t b = 0; b < batch; ++b)
    std::memcpy(out.padding.data<uint8_t>() + b * s_len + p, text_pad.data() + b * l,
                static_cast<size_t>(l));
  // decoder.cross_pos_k_linear of [image_pos_ln(P_img); pos_ln(P_txt)] (spec 3.6).
  out.cross_pos_k = Tensor::empty({s_len, d});
  std::memcpy(out.cross_pos_k.data<float>(), grid.cross_pos_k.data<float>(),
              static_cast<size_t>(p * d) * sizeof(float));
  std::memcpy(out.cross_pos_k.data<float>() + p * d, txt_cross_pos_k_.data<float>(),
              static_cast<size_t>(l * d) * sizeof(float));
  return out;
}

EncoderOutput OfaModel::encode_text(const std::vector<const ImageEncoding*>& images,
                                    const std::vector<int64_t>& image_index,
                                    const Tensor& src_tokens, const ExitTest& text_exit,
                                    StageTimes* times) {
  std::vector<uint8_t> text_pad = text_padding(src_tokens);
  int64_t batch = src_tokens.dim(0), l = src_tokens.dim(1);
  if (static_cast<int64_t>(image_index.size()) != batch)
    throw Error("encode_text: " + std::to_string(image_index.size()) + " image indices for " +
                std::to_string(batch) + " texts");
  if (images.empty()) throw Error("encode_text: no image encodings");
  int64_t gh = images[0]->grid_h, gw = images[0]->grid_w;
  for (const ImageEncoding* e : images)
    if (e->grid_h != gh || e->grid_w != gw)
      throw Error("encode_text: image encodings of different grid sizes cannot share a batch");
  auto locate = [&](int64_t b) -> std::pair<const ImageEncoding*, int64_t> {
    // image_index[b] counts samples across the encodings in order.
    int64_t k = image_index[b];
    for (const ImageEncoding* e : images) {
      if (k < e->states.dim(0)) return {e, k};
      k -= e->states.dim(0);
    }
    throw Error("encode_text: image index " + std::to_string(image_index[b]) + " out of range");
  };
  const int64_t d = config_.d_model, heads = config_.attention_heads, p = gh * gw, s_len = p + l;
  const ImageGridCache& grid = image_grid(gh, gw);
  EncoderOutput out = make_encoder_output(batch, p, l, grid, text_pad);
  out.image_layers.resize(static_cast<size_t>(batch));

  Stopwatch watch;
  ArenaScope scope(arena_);
  float* txt = arena_.floats(static_cast<size_t>(batch * l * d));
  embed_text(src_tokens, text_pad, txt);
  // Text absolute bias [H, L, L], shared by all layers; each layer adds its relative bias.
  std::vector<float> txt_abs(static_cast<size_t>(heads * l * l), 0.f);
  add_projected_position_bias(txt_pos_q_.data<float>(), txt_pos_k_.data<float>(), l, l, heads,
                              dims_.head_dim(), txt_abs.data(), l);
  float* txt_out = arena_.floats(static_cast<size_t>(batch * l * d));
  run_stack(
      txt, batch, l, text_pad.data(),
      [&](int layer, float* bias) {
        std::memcpy(bias, txt_abs.data(), txt_abs.size() * sizeof(float));
        add_text_rel_bias(enc_token_rel_[layer], l, bias, l, 0, 0, l);
        return static_cast<const float*>(bias);
      },
      heads * l * l, text_exit, txt_out, out.text_layers);
  // [image; text] then the final LayerNorm (spec 1.2.5).
  float* states = out.states.data<float>();
  for (int64_t b = 0; b < batch; ++b) {
    auto [enc, k] = locate(b);
    std::memcpy(states + b * s_len * d, enc->states.data<float>() + k * p * d,
                static_cast<size_t>(p * d) * sizeof(float));
    std::memcpy(states + (b * s_len + p) * d, txt_out + b * l * d,
                static_cast<size_t>(l * d) * sizeof(float));
    out.image_layers[b] = enc->layers[k];
  }
  enc_layer_norm_.forward(states, states, batch * s_len);
  if (times) times->text_stream += watch.lap();
  return out;
}

EncoderOutput OfaModel::encode(const Tensor& images, const Tensor& src_tokens,
                               const ExitTest& image_exit, const ExitTest& text_exit,
                               StageTimes* times) {
  std::vector<uint8_t> text_pad = text_padding(src_tokens);
  int64_t batch = src_tokens.dim(0), l = src_tokens.dim(1);
  if (images.rank() != 4 || images.dim(0) != batch || images.dim(3) != 3)
    throw Error("images must be [batch, height, width, 3] with batch " + std::to_string(batch) +
                " (as src_tokens), got " + shape_str(images.shape()));
  if (config_.encoder_mode == EncoderMode::kDecomposed) {
    ImageEncoding img = encode_images(images, image_exit, times);
    std::vector<int64_t> index(static_cast<size_t>(batch));
    std::iota(index.begin(), index.end(), 0);
    return encode_text({&img}, index, src_tokens, text_exit, times);
  }

  // Stock OFA: one joint sequence [image; text] (spec 3.4).
  const int64_t d = config_.d_model, heads = config_.attention_heads;
  auto [gh0, gw0] = resnet_.grid(images.dim(1), images.dim(2));
  const int64_t p = gh0 * gw0, s_len = p + l;
  ArenaScope scope(arena_);
  float* img = arena_.floats(static_cast<size_t>(batch * p * d));
  int64_t gh, gw;
  embed_images(images, img, &gh, &gw, times);
  const ImageGridCache& grid = image_grid(gh, gw);
  EncoderOutput out = make_encoder_output(batch, p, l, grid, text_pad);
  Stopwatch watch;
  float* txt = arena_.floats(static_cast<size_t>(batch * l * d));
  embed_text(src_tokens, text_pad, txt);
  float* joint = arena_.floats(static_cast<size_t>(batch * s_len * d));
  for (int64_t b = 0; b < batch; ++b) {
    std::memcpy(joint + b * s_len * d, img + b * p * d, static_cast<size_t>(p * d) * sizeof(float));
    std::memcpy(joint + (b * s_len + p) * d, txt + b * l * d,
                static_cast<size_t>(l * d) * sizeof(float));
  }
  // Absolute bias over the concatenated positions, then per layer the token relative bias on
  // the text block and the image 2-D relative bias on the image block.
  Tensor pos_q = Tensor::empty({s_len, d}), pos_k = Tensor::empty({s_len, d});
  size_t img_bytes = static_cast<size_t>(p * d) * sizeof(float);
  size_t txt_bytes = static_cast<size_t>(l * d) * sizeof(float);
  std::memcpy(pos_q.data<float>(), grid.pos_q.data<float>(), img_bytes);
  std::memcpy(pos_q.data<float>() + p * d, txt_pos_q_.data<float>(), txt_bytes);
  std::memcpy(pos_k.data<float>(), grid.pos_k.data<float>(), img_bytes);
  std::memcpy(pos_k.data<float>() + p * d, txt_pos_k_.data<float>(), txt_bytes);
  std::vector<float> joint_abs(static_cast<size_t>(heads * s_len * s_len), 0.f);
  add_projected_position_bias(pos_q.data<float>(), pos_k.data<float>(), s_len, s_len, heads,
                              dims_.head_dim(), joint_abs.data(), s_len);
  int64_t ib = config_.image_bucket_size;
  float* states = out.states.data<float>();
  run_stack(
      joint, batch, s_len, out.padding.data<uint8_t>(),
      [&](int layer, float* bias) {
        std::memcpy(bias, joint_abs.data(), joint_abs.size() * sizeof(float));
        add_text_rel_bias(enc_token_rel_[layer], l, bias, s_len, p, p, l);
        const float* tab = enc_image_rel_[layer].data<float>();
        for (int64_t hh = 0; hh < heads; ++hh)
          for (int64_t i = 0; i < p; ++i) {
            float* row = bias + (hh * s_len + i) * s_len;
            for (int64_t j = 0; j < p; ++j)
              row[j] +=
                  tab[image_rel_bucket(grid.rows[i], grid.cols[i], grid.rows[j], grid.cols[j], ib) *
                          heads +
                      hh];
          }
        return static_cast<const float*>(bias);
      },
      heads * s_len * s_len, text_exit, states, out.text_layers);
  out.image_layers = out.text_layers;
  enc_layer_norm_.forward(states, states, batch * s_len);
  if (times) times->text_stream += watch.lap();
  return out;
}

Tensor OfaModel::decode_full(const EncoderOutput& enc, const Tensor& prev_tokens,
                             const ExitTest& decoder_exit, std::vector<int>* decoder_layers,
                             bool last_position_only) {
  if (prev_tokens.rank() != 2 || prev_tokens.dtype() != DType::kI64 ||
      prev_tokens.dim(0) != enc.batch)
    throw Error("prev_output_tokens must be int64 [" + std::to_string(enc.batch) +
                ", length], got " + shape_str(prev_tokens.shape()));
  int64_t batch = enc.batch, t = prev_tokens.dim(1), d = config_.d_model,
          heads = config_.attention_heads, v = config_.vocab_size;
  int64_t s_len = enc.image_tokens + enc.text_tokens;
  if (t < 1 || t > config_.max_target_positions)
    throw Error("target length " + std::to_string(t) + " is outside 1.." +
                std::to_string(config_.max_target_positions));
  const int64_t* tokens = prev_tokens.data<int64_t>();
  std::vector<int64_t> valid(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b)
    valid[b] = valid_prefix(tokens + b * t, t, config_.pad_id, "prev_output_tokens", b);

  ArenaScope scope(arena_);
  size_t sample = static_cast<size_t>(t * d);
  float* x = arena_.floats(batch * sample);
  embed_tokens(tokens, batch * t, x);
  dec_layernorm_embedding_.forward(x, x, batch * t);

  // Self bias [H, T, T] = positions + per-layer relative; cross bias [H, T, S].
  std::vector<float> self_abs(static_cast<size_t>(heads * t * t), 0.f);
  add_projected_position_bias(dec_self_q_.data<float>(), dec_self_k_.data<float>(), t, t, heads,
                              dims_.head_dim(), self_abs.data(), t);
  std::vector<float> cross_bias(static_cast<size_t>(heads * t * s_len), 0.f);
  add_projected_position_bias(dec_cross_q_.data<float>(), enc.cross_pos_k.data<float>(), t, s_len,
                              heads, dims_.head_dim(), cross_bias.data(), s_len);

  float* self_bias = arena_.floats(self_abs.size());
  float* normed = arena_.floats(batch * sample);
  float* q = arena_.floats(batch * sample);
  float* k = arena_.floats(batch * sample);
  float* vv = arena_.floats(batch * sample);
  float* h1 = arena_.floats(batch * sample);
  float* h2 = arena_.floats(batch * sample);
  float* y = arena_.floats(batch * sample);
  float* final_h = arena_.floats(batch * sample);
  size_t cross_elems = static_cast<size_t>(s_len * d);
  float* ck = arena_.floats(batch * cross_elems);
  float* cv = arena_.floats(batch * cross_elems);
  std::vector<uint8_t> cross_pad(static_cast<size_t>(batch * s_len));
  std::vector<int64_t> active(static_cast<size_t>(batch));
  std::iota(active.begin(), active.end(), 0);
  std::vector<int> used(static_cast<size_t>(batch), 0);

  int layers = static_cast<int>(dec_layers_.size());
  for (int li = 0; li < layers; ++li) {
    const DecoderLayer& layer = dec_layers_[li];
    int64_t nb = static_cast<int64_t>(active.size());
    std::memcpy(self_bias, self_abs.data(), self_abs.size() * sizeof(float));
    add_text_rel_bias(dec_token_rel_[li], t, self_bias, t, 0, 0, t);
    layer.self_attention_qkv(x, normed, q, k, vv, nb * t);
    AttentionMasking self_mask;
    self_mask.bias = self_bias;
    self_mask.bias_row_stride = t;
    self_mask.causal = true;
    layer.self_attention_finish(x, q, KeyValueView{k, vv, t * d, dims_.head_dim(), d, t}, nb, t,
                                self_mask, h1, arena_);
    // Cross K/V only for the samples still running: exited samples cost nothing deeper.
    for (int64_t i = 0; i < nb; ++i) {
      int64_t s = active[i];
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
    layer.cross_attention(h1, KeyValueView{ck, cv, s_len * d, dims_.head_dim(), d, s_len}, nb, t,
                          cross_mask, h2, arena_);
    layer.feed_forward(h2, y, nb * t, arena_);

    bool last = li + 1 == layers;
    int64_t keep = 0;
    for (int64_t i = 0; i < nb; ++i) {
      int64_t s = active[i];
      const float* yi = y + i * sample;
      bool stop = last;
      if (!stop && decoder_exit)
        stop = decoder_exit(li, s, kernels::cosine_similarity(yi, x + i * sample, valid[s] * d));
      if (stop) {
        std::memcpy(final_h + s * sample, yi, sample * sizeof(float));
        used[s] = li + 1;
      } else {
        std::memcpy(x + keep * sample, yi, sample * sizeof(float));
        active[keep++] = s;
      }
    }
    active.resize(static_cast<size_t>(keep));
    if (active.empty()) break;
  }
  if (decoder_layers) *decoder_layers = used;

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

DecoderState OfaModel::start_decoding(const EncoderOutput& enc, int64_t beams, int64_t max_len) {
  if (beams < 1) throw Error("beams must be at least 1, got " + std::to_string(beams));
  if (max_len < 1 || max_len > config_.max_target_positions)
    throw Error("max_len " + std::to_string(max_len) + " is outside 1.." +
                std::to_string(config_.max_target_positions));
  DecoderState st;
  st.rows = enc.batch * beams;
  st.max_len = max_len;
  st.encoder = &enc;
  for (int64_t b = 0; b < enc.batch; ++b)
    for (int64_t k = 0; k < beams; ++k) st.row_sample.push_back(b);
  int64_t heads = config_.attention_heads, dh = dims_.head_dim(), d = config_.d_model;
  int64_t s_len = enc.image_tokens + enc.text_tokens;
  for (size_t li = 0; li < dec_layers_.size(); ++li) {
    st.self_k.push_back(Tensor::empty({st.rows, heads, max_len, dh}));
    st.self_v.push_back(Tensor::empty({st.rows, heads, max_len, dh}));
    st.filled.emplace_back(static_cast<size_t>(st.rows), 0);
    // Cross-attention K/V for every layer, once per encode (as whisper.cpp), so a layer skipped
    // by an early exit never lacks them later.
    Tensor ck = Tensor::empty({enc.batch, s_len, d}), cv = Tensor::empty({enc.batch, s_len, d});
    dec_layers_[li].cross_attention_kv(enc.states.data<float>(), ck.data<float>(), cv.data<float>(),
                                       enc.batch * s_len);
    st.cross_k.push_back(std::move(ck));
    st.cross_v.push_back(std::move(cv));
  }
  return st;
}

void OfaModel::reorder_rows(DecoderState& st, const std::vector<int64_t>& src_rows) const {
  int64_t n = static_cast<int64_t>(src_rows.size());
  if (!st.self_k.empty() && n > st.self_k[0].dim(0))
    throw Error("reorder_rows: " + std::to_string(n) + " rows exceed the cache's capacity");
  for (int64_t r : src_rows)
    if (r < 0 || r >= st.rows)
      throw Error("reorder_rows: source row " + std::to_string(r) + " outside 0.." +
                  std::to_string(st.rows - 1));
  std::vector<int64_t> new_sample(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) new_sample[i] = st.row_sample[src_rows[i]];
  int64_t heads = config_.attention_heads, dh = dims_.head_dim();
  int64_t row_elems = heads * st.max_len * dh;
  for (size_t li = 0; li < st.self_k.size(); ++li) {
    // Gather through a copy: a source row may feed several new rows and be overwritten.
    int64_t len = 0;
    for (int64_t r : src_rows) len = std::max(len, st.filled[li][r]);
    std::vector<float> k(static_cast<size_t>(n * heads * len * dh)), v(k.size());
    std::vector<int64_t> filled(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const float* ks = st.self_k[li].data<float>() + src_rows[i] * row_elems;
      const float* vs = st.self_v[li].data<float>() + src_rows[i] * row_elems;
      for (int64_t h = 0; h < heads; ++h) {
        std::memcpy(&k[((i * heads + h) * len) * dh], ks + h * st.max_len * dh,
                    static_cast<size_t>(len * dh) * sizeof(float));
        std::memcpy(&v[((i * heads + h) * len) * dh], vs + h * st.max_len * dh,
                    static_cast<size_t>(len * dh) * sizeof(float));
      }
      filled[i] = st.filled[li][src_rows[i]];
    }
    for (int64_t i = 0; i < n; ++i) {
      float* kd = st.self_k[li].data<float>() + i * row_elems;
      float* vd = st.self_v[li].data<float>() + i * row_elems;
      for (int64_t h = 0; h < heads; ++h) {
        std::memcpy(kd + h * st.max_len * dh, &k[((i * heads + h) * len) * dh],
                    static_cast<size_t>(len * dh) * sizeof(float));
        std::memcpy(vd + h * st.max_len * dh, &v[((i * heads + h) * len) * dh],
                    static_cast<size_t>(len * dh) * sizeof(float));
      }
    }
    st.filled[li] = std::move(filled);
  }
  st.row_sample = std::move(new_sample);
  st.rows = n;
}

Tensor OfaModel::decode_step(DecoderState& st, const std::vector<int64_t>& tokens,
                             const GroupExitTest& exit_test, SkippedLayerCache skipped,
                             std::vector<int>* group_layers) {
  if (static_cast<int64_t>(tokens.size()) != st.rows)
    throw Error("decode_step: got " + std::to_string(tokens.size()) + " tokens for " +
                std::to_string(st.rows) + " rows");
  if (st.step >= st.max_len)
    throw Error("decode_step: the cache holds " + std::to_string(st.max_len) +
                " steps and all are used");
  const EncoderOutput& enc = *st.encoder;
  const int64_t rows = st.rows, d = config_.d_model, heads = config_.attention_heads,
                dh = dims_.head_dim(), v = config_.vocab_size, pos = st.step;
  const int64_t s_len = enc.image_tokens + enc.text_tokens, t1 = pos + 1;
  const int layers = static_cast<int>(dec_layers_.size());

  // Groups: runs of consecutive rows of one sample.
  struct Group {
    int64_t index, sample, first_row, count, offset;  // offset: first row in compact buffers
  };
  std::vector<Group> groups;
  for (int64_t r = 0; r < rows; ++r)
    if (groups.empty() || st.row_sample[r] != groups.back().sample)
      groups.push_back({static_cast<int64_t>(groups.size()), st.row_sample[r], r, 1, r});
    else
      ++groups.back().count;

  ArenaScope scope(arena_);
  size_t n = static_cast<size_t>(rows * d);
  float* x = arena_.floats(n);
  embed_tokens(tokens.data(), rows, x);
  dec_layernorm_embedding_.forward(x, x, rows);
  float* final_h = arena_.floats(n);

  // Bias rows of the current position: self [H, t+1] per layer, cross [H, S].
  std::vector<float> self_abs(static_cast<size_t>(heads * t1), 0.f);
  add_projected_position_bias(dec_self_q_.data<float>() + pos * d, dec_self_k_.data<float>(), 1, t1,
                              heads, dh, self_abs.data(), t1);
  std::vector<float> self_bias(self_abs.size());
  std::vector<float> cross_bias(static_cast<size_t>(heads * s_len), 0.f);
  add_projected_position_bias(dec_cross_q_.data<float>() + pos * d, enc.cross_pos_k.data<float>(),
                              1, s_len, heads, dh, cross_bias.data(), s_len);

  float* normed = arena_.floats(n);
  float* q = arena_.floats(n);
  float* k = arena_.floats(n);
  float* vv = arena_.floats(n);
  float* h1 = arena_.floats(n);
  float* h2 = arena_.floats(n);
  float* y = arena_.floats(n);
  const int64_t cache_row = heads * st.max_len * dh;
  std::vector<int> used(groups.size(), layers);

  // Writes K/V rows [count, d] into layer li's cache for state rows first..first+count.
  auto append_kv = [&](int li, const Group& g, const float* k_rows, const float* v_rows) {
    float* kc = st.self_k[li].data<float>();
    float* vc = st.self_v[li].data<float>();
    for (int64_t i = 0; i < g.count; ++i) {
      int64_t r = g.first_row + i;
      int64_t at = st.filled[li][r];
      if (at >= st.max_len) throw Error("decode_step: layer cache overflow");
      for (int64_t hh = 0; hh < heads; ++hh) {
        std::memcpy(kc + r * cache_row + (hh * st.max_len + at) * dh, k_rows + i * d + hh * dh,
                    static_cast<size_t>(dh) * sizeof(float));
        std::memcpy(vc + r * cache_row + (hh * st.max_len + at) * dh, v_rows + i * d + hh * dh,
                    static_cast<size_t>(dh) * sizeof(float));
      }
      st.filled[li][r] = at + 1;
    }
  };

  std::vector<Group> active = groups;
  int64_t active_rows = rows;
  for (int li = 0; li < layers && !active.empty(); ++li) {
    const DecoderLayer& layer = dec_layers_[li];
    self_bias = self_abs;
    add_text_rel_bias(dec_token_rel_[li], t1, self_bias.data(), t1, 0, 0, 1);
    layer.self_attention_qkv(x, normed, q, k, vv, active_rows);
    for (const Group& g : active) {
      append_kv(li, g, k + g.offset * d, vv + g.offset * d);
      int64_t tk = st.filled[li][g.first_row];
      // A shorter cache (layers skipped at earlier steps, `reference` mode) takes the bias of
      // the most recent positions: right-aligned, as the released code does (spec 1.3).
      AttentionMasking self_mask;
      self_mask.bias = self_bias.data() + (t1 - tk);
      self_mask.bias_row_stride = t1;
      KeyValueView kv{st.self_k[li].data<float>() + g.first_row * cache_row,
                      st.self_v[li].data<float>() + g.first_row * cache_row,
                      cache_row,
                      st.max_len * dh,
                      dh,
                      tk};
      layer.self_attention_finish(x + g.offset * d, q + g.offset * d, kv, g.count, 1, self_mask,
                                  h1 + g.offset * d, arena_);
      // Cross-attention: the beams of one sample share its encoder K/V (batch stride 0).
      AttentionMasking cross_mask;
      cross_mask.bias = cross_bias.data();
      cross_mask.bias_row_stride = s_len;
      cross_mask.key_padding = enc.padding.data<uint8_t>() + g.sample * s_len;
      cross_mask.key_padding_stride = 0;
      KeyValueView ckv{st.cross_k[li].data<float>() + g.sample * s_len * d,
                       st.cross_v[li].data<float>() + g.sample * s_len * d,
                       0,
                       dh,
                       d,
                       s_len};
      layer.cross_attention(h1 + g.offset * d, ckv, g.count, 1, cross_mask, h2 + g.offset * d,
                            arena_);
    }
    layer.feed_forward(h2, y, active_rows, arena_);

    bool last = li + 1 == layers;
    std::vector<Group> next;
    int64_t offset = 0;
    for (Group g : active) {
      const float* yg = y + g.offset * d;
      bool stop = last;
      if (!stop && exit_test) {
        // One cosine over all beams of the sample (spec 1.3).
        double cos = kernels::cosine_similarity(yg, x + g.offset * d, g.count * d);
        stop = exit_test(li, g.index, cos);
        if (stop) used[g.index] = li + 1;
      }
      if (stop) {
        std::memcpy(final_h + g.first_row * d, yg,
                    static_cast<size_t>(g.count * d) * sizeof(float));
        if (!last && skipped == SkippedLayerCache::kPropagate) {
          // CALM-style: the skipped layers see the exited state, so their caches stay aligned.
          for (int lj = li + 1; lj < layers; ++lj) {
            float* kn = arena_.floats(static_cast<size_t>(g.count * d));
            float* vn = arena_.floats(static_cast<size_t>(g.count * d));
            float* ln = arena_.floats(static_cast<size_t>(g.count * d));
            dec_layers_[lj].self_attn_layer_norm().forward(yg, ln, g.count);
            dec_layers_[lj].self_attn().k_proj.forward(ln, kn, g.count);
            dec_layers_[lj].self_attn().v_proj.forward(ln, vn, g.count);
            append_kv(lj, g, kn, vn);
          }
        }
      } else {
        std::memcpy(x + offset * d, yg, static_cast<size_t>(g.count * d) * sizeof(float));
        g.offset = offset;
        offset += g.count;
        next.push_back(g);
      }
    }
    active = std::move(next);
    active_rows = offset;
  }
  if (group_layers) *group_layers = used;
  ++st.step;
  dec_layer_norm_.forward(final_h, final_h, rows);
  Tensor logits = Tensor::empty({rows, v});
  output_projection_.forward(final_h, logits.data<float>(), rows);
  return logits;
}

}  // namespace mue
