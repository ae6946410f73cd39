// The OFA encoder-decoder (spec 3): image backbone, encoder in joint or decomposed (MuE) mode,
// and the decoder run over whole sequences or incrementally with a preallocated KV cache.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/arena.h"
#include "layers/basic.h"
#include "layers/resnet.h"
#include "layers/transformer.h"
#include "model/exit_controller.h"
#include "mue/config.h"
#include "mue/exit_policy.h"

namespace mue {

// Wall-clock seconds per stage, accumulated by the calls that receive it.
struct StageTimes {
  double resnet = 0, image_stream = 0, text_stream = 0, decoder = 0;
};

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  // Seconds since construction or the previous lap.
  double lap() {
    auto now = std::chrono::steady_clock::now();
    double s = std::chrono::duration<double>(now - start_).count();
    start_ = now;
    return s;
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

// The decomposed encoder's image stream output (before the encoder's final LayerNorm): it never
// sees the text, so it can be computed once and reused for many queries on the same image.
struct ImageEncoding {
  Tensor states;  // [B, P, D]
  int64_t grid_h = 0, grid_w = 0;
  std::vector<int> layers;  // layers each sample used
  size_t bytes() const { return states.nbytes(); }
};

struct EncoderOutput {
  Tensor states;       // [B, S, D], S = image_tokens + text_tokens, image first (spec 1.2.5)
  Tensor padding;      // [B, S] uint8, 1 = padded text position
  Tensor cross_pos_k;  // [S, D]: decoder.cross_pos_k_linear of the LN'd source positions
  int64_t batch = 0, image_tokens = 0, text_tokens = 0;
  std::vector<int> image_layers, text_layers;  // layers each sample used per stream
};

// Decoder KV cache: self-attention K/V preallocated per layer as [rows, heads, max_len, head_dim]
// with a per-layer, per-row fill count (early exits leave skipped layers behind in `reference`
// mode); cross-attention K/V once per encode as [batch, S, d]. The rows of one source sample
// (its beams) are consecutive: a "group", which takes one exit decision per step (spec 1.3).
struct DecoderState {
  int64_t rows = 0;
  int64_t max_len = 0;
  int64_t step = 0;                          // position of the next token
  std::vector<int64_t> row_sample;           // encoder sample of each row
  std::vector<Tensor> self_k, self_v;        // per layer [capacity, heads, max_len, head_dim]
  std::vector<std::vector<int64_t>> filled;  // [layer][row]
  std::vector<Tensor> cross_k, cross_v;      // per layer [batch, S, d]
  const EncoderOutput* encoder = nullptr;
};

// Decoder exit test for one group at one step: true stops the group after `layer`.
using GroupExitTest = std::function<bool(int layer, int64_t group, double cosine)>;

class OfaModel {
 public:
  // Loads config.json + model.safetensors from a model directory.
  static std::unique_ptr<OfaModel> load(const std::string& dir);
  static std::unique_ptr<OfaModel> load(const ModelConfig& config, const std::string& weights_path);

  const ModelConfig& config() const { return config_; }

  // images: [B, H, W, 3] fp32 NHWC, normalised; src_tokens: [B, L] int64, right-padded.
  // Exit tests (may be null: full depth) per stream; in joint mode only `text_exit` applies,
  // to the joint stack.
  EncoderOutput encode(const Tensor& images, const Tensor& src_tokens,
                       const ExitTest& image_exit = nullptr, const ExitTest& text_exit = nullptr,
                       StageTimes* times = nullptr);
  // Decomposed mode in two parts: the image stream alone, then the text stream joined with
  // image encodings (sample b uses image sample image_index[b], counted across `images`).
  ImageEncoding encode_images(const Tensor& images, const ExitTest& image_exit = nullptr,
                              StageTimes* times = nullptr);
  EncoderOutput encode_text(const std::vector<const ImageEncoding*>& images,
                            const std::vector<int64_t>& image_index, const Tensor& src_tokens,
                            const ExitTest& text_exit = nullptr, StageTimes* times = nullptr);

  // Image features after the ResNet: [B, P, C] (exposed for tests and benchmarks).
  Tensor image_features(const Tensor& images);

  // Whole-sequence decoder (causal): prev_tokens [B, T] right-padded -> logits [B, T, V].
  // `decoder_exit` (may be null) is tested per sample over its valid positions.
  // With `last_position_only`, returns [B, V]: the logits at each sample's last valid position.
  Tensor decode_full(const EncoderOutput& enc, const Tensor& prev_tokens,
                     const ExitTest& decoder_exit = nullptr,
                     std::vector<int>* decoder_layers = nullptr, bool last_position_only = false);

  // Incremental decoding: start with `beams` rows per sample, then one token per row per step
  // -> logits [rows, V]. `group_layers` (optional) receives the layers each group used.
  DecoderState start_decoding(const EncoderOutput& enc, int64_t beams, int64_t max_len);
  Tensor decode_step(DecoderState& state, const std::vector<int64_t>& tokens,
                     const GroupExitTest& exit_test = nullptr,
                     SkippedLayerCache skipped = SkippedLayerCache::kPropagate,
                     std::vector<int>* group_layers = nullptr);
  // Beam bookkeeping: row i of the new state is row src_rows[i] of the old one (rows may repeat
  // or disappear; each sample's rows must stay consecutive).
  void reorder_rows(DecoderState& state, const std::vector<int64_t>& src_rows) const;
  int num_decoder_layers() const { return static_cast<int>(dec_layers_.size()); }
  int num_encoder_layers() const { return static_cast<int>(enc_layers_.size()); }

  Arena& arena() { return arena_; }

 private:
  OfaModel() = default;
  void load_weights(WeightStore& w);
  void precompute_positions();
  struct ImageGridCache {
    Tensor pos_q, pos_k;              // [P, D] projections of image_pos_ln(positions) (q scaled)
    Tensor abs_bias;                  // [H, P, P]
    Tensor cross_pos_k;               // [P, D] decoder.cross_pos_k_linear(image_pos_ln(...))
    std::vector<int64_t> rows, cols;  // grid coordinates of each patch
  };
  const ImageGridCache& image_grid(int64_t gh, int64_t gw);
  void embed_images(const Tensor& images, float* out, int64_t* grid_h, int64_t* grid_w,
                    StageTimes* times);
  std::vector<uint8_t> text_padding(const Tensor& src_tokens) const;
  void embed_text(const Tensor& src_tokens, const std::vector<uint8_t>& pad, float* out);
  EncoderOutput make_encoder_output(int64_t batch, int64_t p, int64_t l, const ImageGridCache& grid,
                                    const std::vector<uint8_t>& text_pad) const;
  void run_stack(float* x, int64_t batch, int64_t t, const uint8_t* key_padding,
                 const std::function<const float*(int layer, float* scratch)>& make_bias,
                 int64_t bias_len, const ExitTest& exit_test, float* out,
                 std::vector<int>& layers_used);
  void embed_tokens(const int64_t* tokens, int64_t n, float* out) const;
  void add_text_rel_bias(const Tensor& table, int64_t t, float* bias, int64_t ld, int64_t q_offset,
                         int64_t k_offset, int64_t tq) const;

  ModelConfig config_;
  TransformerDims dims_;
  std::shared_ptr<SafeTensorsFile> file_;

  // Encoder.
  Tensor embed_tokens_;  // [V, D] shared (spec 3.7)
  kernels::PackedLinear output_projection_;
  LayerNorm enc_layernorm_embedding_, enc_patch_layernorm_embedding_, enc_layer_norm_;
  LayerNorm enc_pos_ln_, enc_image_pos_ln_;
  Tensor enc_type_embedding_, enc_embed_positions_, enc_embed_image_positions_;
  Linear image_proj_, enc_pos_q_, enc_pos_k_;
  ResNetBackbone resnet_;
  std::vector<EncoderLayer> enc_layers_;
  std::vector<Tensor> enc_token_rel_, enc_image_rel_;

  // Decoder.
  LayerNorm dec_layernorm_embedding_, dec_layer_norm_, dec_pos_ln_;
  Tensor dec_embed_positions_;
  Linear dec_self_pos_q_, dec_self_pos_k_, dec_cross_pos_q_, dec_cross_pos_k_;
  std::vector<DecoderLayer> dec_layers_;
  std::vector<Tensor> dec_token_rel_;

  // Position projections computed once at load (they depend only on positions).
  Tensor txt_pos_q_, txt_pos_k_;                  // [Ns, D] encoder text positions (q scaled)
  Tensor txt_cross_pos_k_;                        // [Ns, D]
  Tensor dec_self_q_, dec_self_k_, dec_cross_q_;  // [Nt, D] (q scaled)

  std::mutex grid_mutex_;
  std::map<std::pair<int64_t, int64_t>, ImageGridCache> grid_cache_;
  Arena arena_;
};

}  // namespace mue
