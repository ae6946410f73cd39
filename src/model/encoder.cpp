// The encoder (spec 3.4, 1.2): ResNet and image embedding, the image and text streams of the
// decomposed (MuE) encoder, and stock OFA's joint stack, each through the one exit loop.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "kernels/kernels.h"
#include "layers/position.h"
#include "model/exit_loop.h"
#include "model/ofa_model.h"

namespace mue {

std::vector<int> OfaModel::run_encoder_stack(
    float* x, int64_t batch, int64_t t, const uint8_t* key_padding,
    const std::function<const float*(int layer, float* scratch)>& make_bias, int64_t bias_len,
    const ExitDecision& decide, float* out, Arena& arena,
    std::pair<const float*, const float*> bias_factors) const {
  const int64_t d = config_.d_model;
  const size_t sample_elems = static_cast<size_t>(t * d);
  float* y = arena.floats(static_cast<size_t>(batch) * sample_elems);
  float* bias = bias_len ? arena.floats(static_cast<size_t>(bias_len)) : nullptr;
  std::vector<ExitGroup> groups;
  for (int64_t b = 0; b < batch; ++b) {
    int64_t valid = t;
    if (key_padding) valid = std::count(key_padding + b * t, key_padding + (b + 1) * t, uint8_t{0});
    groups.push_back({b, t, valid, 0});
  }
  std::vector<uint8_t> pad;  // the active samples' key padding, compacted as they are

  LayerStack stack;
  stack.layers = static_cast<int>(enc_layers_.size());
  stack.width = d;
  stack.run_layer = [&](int layer, const std::vector<ExitGroup>& active, int64_t, const float* in,
                        float* y_out) {
    AttentionMasking m;
    m.bias = make_bias(layer, bias);
    m.bias_row_stride = t;
    m.bias_q = bias_factors.first;
    m.bias_k = bias_factors.second;
    if (key_padding) {
      pad.resize(active.size() * static_cast<size_t>(t));
      for (size_t i = 0; i < active.size(); ++i)
        std::memcpy(pad.data() + i * t, key_padding + active[i].id * t, static_cast<size_t>(t));
      m.key_padding = pad.data();
      m.key_padding_stride = t;
    }
    enc_layers_[layer].forward(in, y_out, static_cast<int64_t>(active.size()), t, m, arena);
  };
  stack.on_exit = [&](int, const ExitGroup& g, const float* rows) {
    std::memcpy(out + g.id * sample_elems, rows, sample_elems * sizeof(float));
  };
  return run_with_exits(stack, std::move(groups), x, y, decide);
}

Tensor OfaModel::image_features(const Tensor& images, Arena* given) const {
  if (images.rank() != 4 || images.dim(3) != 3)
    throw Error("images must be [batch, height, width, 3] NHWC, got " + shape_str(images.shape()));
  int64_t b = images.dim(0), h = images.dim(1), w = images.dim(2);
  auto [gh, gw] = resnet_.grid(h, w);
  Tensor out = Tensor::empty({b, gh * gw, resnet_.out_channels()});
  CallScratch arena(given);
  resnet_.forward(images.data<float>(), b, h, w, out.data<float>(), *arena);
  return out;
}

void OfaModel::embed_images(const Tensor& images, float* out, int64_t* grid_h, int64_t* grid_w,
                            StageTimes* times, Arena& arena) const {
  Stopwatch watch;
  Tensor features = image_features(images, &arena);  // [B, P, C]
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

ImageEncoding OfaModel::encode_images(const Tensor& images, const ExitDecision& image_exit,
                                      StageTimes* times, Arena* given) const {
  if (config_.encoder_mode != EncoderMode::kDecomposed)
    throw Error("encode_images: the image stream stands alone only in the decomposed encoder");
  if (images.rank() != 4 || images.dim(3) != 3)
    throw Error("images must be [batch, height, width, 3] NHWC, got " + shape_str(images.shape()));
  int64_t batch = images.dim(0), d = config_.d_model;
  auto [gh0, gw0] = resnet_.grid(images.dim(1), images.dim(2));
  int64_t p = gh0 * gw0;
  ImageEncoding enc;
  enc.states = Tensor::empty({batch, p, d});
  CallScratch arena(given);
  float* img = (*arena).floats(static_cast<size_t>(batch * p * d));
  embed_images(images, img, &enc.grid_h, &enc.grid_w, times, *arena);
  const ImageGridCache& grid = image_grid(enc.grid_h, enc.grid_w);
  Stopwatch watch;
  // The image stream uses the absolute bias only, as the released MuE code does (spec 1.2).
  enc.layers = run_encoder_stack(
      img, batch, p, nullptr, [&](int, float*) { return grid.abs_bias.data<float>(); }, 0,
      image_exit, enc.states.data<float>(), *arena,
      {grid.pos_q.data<float>(), grid.pos_k.data<float>()});
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

void OfaModel::embed_text(const Tensor& src_tokens, const std::vector<uint8_t>& pad,
                          float* out) const {
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
                                    const Tensor& src_tokens, const ExitDecision& text_exit,
                                    StageTimes* times, Arena* given) const {
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
  CallScratch arena(given);
  float* txt = (*arena).floats(static_cast<size_t>(batch * l * d));
  embed_text(src_tokens, text_pad, txt);
  // Text absolute bias [H, L, L], shared by all layers; each layer adds its relative bias.
  std::vector<float> txt_abs(static_cast<size_t>(heads * l * l), 0.f);
  kernels::add_projected_position_bias(txt_pos_q_.data<float>(), txt_pos_k_.data<float>(), l, l,
                                       heads, dims_.head_dim(), txt_abs.data(), l);
  float* txt_out = (*arena).floats(static_cast<size_t>(batch * l * d));
  out.text_layers = run_encoder_stack(
      txt, batch, l, text_pad.data(),
      [&](int layer, float* bias) {
        std::memcpy(bias, txt_abs.data(), txt_abs.size() * sizeof(float));
        add_text_rel_bias(enc_token_rel_[layer], l, bias, l, 0, 0, l);
        return static_cast<const float*>(bias);
      },
      heads * l * l, text_exit, txt_out, *arena);
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
                               const ExitDecision& image_exit, const ExitDecision& text_exit,
                               StageTimes* times, Arena* given) const {
  std::vector<uint8_t> text_pad = text_padding(src_tokens);
  int64_t batch = src_tokens.dim(0), l = src_tokens.dim(1);
  if (images.rank() != 4 || images.dim(0) != batch || images.dim(3) != 3)
    throw Error("images must be [batch, height, width, 3] with batch " + std::to_string(batch) +
                " (as src_tokens), got " + shape_str(images.shape()));
  if (config_.encoder_mode == EncoderMode::kDecomposed) {
    ImageEncoding img = encode_images(images, image_exit, times, given);
    std::vector<int64_t> index(static_cast<size_t>(batch));
    std::iota(index.begin(), index.end(), 0);
    return encode_text({&img}, index, src_tokens, text_exit, times, given);
  }

  // Stock OFA: one joint sequence [image; text] (spec 3.4).
  const int64_t d = config_.d_model, heads = config_.attention_heads;
  auto [gh0, gw0] = resnet_.grid(images.dim(1), images.dim(2));
  const int64_t p = gh0 * gw0, s_len = p + l;
  CallScratch arena(given);
  float* img = (*arena).floats(static_cast<size_t>(batch * p * d));
  int64_t gh, gw;
  embed_images(images, img, &gh, &gw, times, *arena);
  const ImageGridCache& grid = image_grid(gh, gw);
  EncoderOutput out = make_encoder_output(batch, p, l, grid, text_pad);
  Stopwatch watch;
  float* txt = (*arena).floats(static_cast<size_t>(batch * l * d));
  embed_text(src_tokens, text_pad, txt);
  float* joint = (*arena).floats(static_cast<size_t>(batch * s_len * d));
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
  kernels::add_projected_position_bias(pos_q.data<float>(), pos_k.data<float>(), s_len, s_len,
                                       heads, dims_.head_dim(), joint_abs.data(), s_len);
  int64_t ib = config_.image_bucket_size;
  float* states = out.states.data<float>();
  out.text_layers = run_encoder_stack(
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
      heads * s_len * s_len, text_exit, states, *arena);
  out.image_layers = out.text_layers;
  enc_layer_norm_.forward(states, states, batch * s_len);
  if (times) times->text_stream += watch.lap();
  return out;
}

}  // namespace mue
