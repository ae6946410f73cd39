// The OFA encoder-decoder (spec 3): image backbone, encoder in joint or decomposed (MuE) mode,
// and the decoder run over whole sequences or incrementally with a preallocated KV cache.
// Loaded once and immutable after: every method is const and may be called from many threads
// at once; a call's scratch memory comes from the Arena it is given (or one of its own).
// Implemented in ofa_model.cpp (loading, positions), encoder.cpp and decoder.cpp; every stack
// runs through run_with_exits (exit_loop.h).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "core/arena.h"
#include "core/timing.h"
#include "layers/basic.h"
#include "layers/resnet.h"
#include "layers/transformer.h"
#include "model/exit_controller.h"
#include "model/kv_cache.h"
#include "mue/config.h"
#include "mue/exit_policy.h"

namespace mue {

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

// Incremental decoding state: the self-attention cache, and cross-attention K/V for every
// layer computed once per encode as [batch, S, d] (as whisper.cpp does, so that a layer skipped
// by an early exit never lacks them later). The rows of one source sample (its beams) are
// consecutive: a group, which takes one exit decision per step (spec 1.3).
struct DecoderState {
  int64_t max_len = 0;
  int64_t step = 0;                 // position of the next token
  std::vector<int64_t> row_sample;  // encoder sample of each row
  KvCache self;
  // Per layer [batch, S, d] in fp32, or [batch, heads, S, head_dim] in bf16 under the bf16 and
  // int8 compute types on CPUs that multiply bf16 natively (every step reads them all: half the
  // bytes, and per head contiguous).
  std::vector<Tensor> cross_k, cross_v;
  const EncoderOutput* encoder = nullptr;

  int64_t rows() const { return self.rows(); }
  // Beam bookkeeping: row i of the new state is row src_rows[i] of the old one (rows may repeat
  // or disappear; each sample's rows must stay consecutive).
  void reorder_rows(const std::vector<int64_t>& src_rows);
};

class OfaModel {
 public:
  // Loads config.json + model.safetensors from a model directory. `compute_type` (kAuto is
  // resolved here) is that of the ResNet's convolutions, image_proj, the layers' projections and
  // FFNs, and the tied output projection, whose weights are converted once, here; the position
  // projections (computed at load or once per grid) and everything else stay fp32.
  static std::unique_ptr<OfaModel> load(const std::string& dir,
                                        ComputeType compute_type = ComputeType::kF32);
  static std::unique_ptr<OfaModel> load(const ModelConfig& config, const std::string& weights_path,
                                        ComputeType compute_type = ComputeType::kF32);

  const ModelConfig& config() const { return config_; }
  ComputeType compute_type() const { return compute_type_; }  // never kAuto
  // Resident weight bytes: those the GEMMs and convolutions hold (packed, in the compute type)
  // and the fp32 tensors the model keeps (embeddings, norms, tables, position projections).
  struct WeightBytes {
    size_t kernels = 0, other = 0;
    size_t total() const { return kernels + other; }
  };
  WeightBytes weight_bytes() const;

  // images: [B, H, W, 3] fp32 NHWC, normalised; src_tokens: [B, L] int64, right-padded.
  // Exit decisions (empty: full depth) per stream; in joint mode only `text_exit` applies, to
  // the joint stack. `arena`: the call's scratch (null: the call makes its own).
  EncoderOutput encode(const Tensor& images, const Tensor& src_tokens,
                       const ExitDecision& image_exit = {}, const ExitDecision& text_exit = {},
                       StageTimes* times = nullptr, Arena* arena = nullptr) const;
  // Decomposed mode in two parts: the image stream alone, then the text stream joined with
  // image encodings (sample b uses image sample image_index[b], counted across `images`).
  ImageEncoding encode_images(const Tensor& images, const ExitDecision& image_exit = {},
                              StageTimes* times = nullptr, Arena* arena = nullptr) const;
  EncoderOutput encode_text(const std::vector<const ImageEncoding*>& images,
                            const std::vector<int64_t>& image_index, const Tensor& src_tokens,
                            const ExitDecision& text_exit = {}, StageTimes* times = nullptr,
                            Arena* arena = nullptr) const;

  // Image features after the ResNet: [B, P, C] (exposed for tests and benchmarks).
  Tensor image_features(const Tensor& images, Arena* arena = nullptr) const;

  // Whole-sequence decoder (causal): prev_tokens [B, T] right-padded -> logits [B, T, V].
  // `decoder_exit` decides per sample over its valid positions; `decoder_layers` (optional)
  // receives the layers each sample used. With `last_position_only`, returns [B, V]: the logits
  // at each sample's last valid position. A confidence rule reads each sample's last valid
  // position, over `confidence_ids` (e.g. entailment's three answers; null: the vocabulary).
  Tensor decode_full(const EncoderOutput& enc, const Tensor& prev_tokens,
                     const ExitDecision& decoder_exit = {},
                     std::vector<int>* decoder_layers = nullptr, bool last_position_only = false,
                     Arena* arena = nullptr,
                     const std::vector<int64_t>* confidence_ids = nullptr) const;

  // Incremental decoding: start with `beams` rows per sample, then one token per row per step
  // -> logits [rows, V]. The decision is asked per group (a sample's beams; a confidence rule
  // reads the least confident beam, over the vocabulary); `group_layers`
  // (optional) receives the layers each group used.
  DecoderState start_decoding(const EncoderOutput& enc, int64_t beams, int64_t max_len) const;
  Tensor decode_step(DecoderState& state, const std::vector<int64_t>& tokens,
                     const ExitDecision& exit = {},
                     SkippedLayerCache skipped = SkippedLayerCache::kPropagate,
                     std::vector<int>* group_layers = nullptr, Arena* arena = nullptr) const;
  int num_decoder_layers() const { return static_cast<int>(dec_layers_.size()); }
  // The answer's confidence of `n` decoder states [n, D] taken after an intermediate layer:
  // each through the final LayerNorm and the output projection (only `ids`' rows where given,
  // else the whole vocabulary), softmax, then `measure`; the smallest over the n rows.
  double answer_confidence(const float* states, int64_t n, const std::vector<int64_t>* ids,
                           ConfidenceMeasure measure, Arena& arena) const;
  int num_encoder_layers() const { return static_cast<int>(enc_layers_.size()); }

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
  // Built on first use per grid size; entries are never removed, so references stay valid.
  const ImageGridCache& image_grid(int64_t gh, int64_t gw) const;
  void embed_images(const Tensor& images, float* out, int64_t* grid_h, int64_t* grid_w,
                    StageTimes* times, Arena& arena) const;
  std::vector<uint8_t> text_padding(const Tensor& src_tokens) const;
  void embed_text(const Tensor& src_tokens, const std::vector<uint8_t>& pad, float* out) const;
  EncoderOutput make_encoder_output(int64_t batch, int64_t p, int64_t l, const ImageGridCache& grid,
                                    const std::vector<uint8_t>& text_pad) const;
  // An encoder stack over `batch` samples of `t` rows each in x (overwritten); each sample's
  // output goes to `out` [batch, t, d]. `make_bias` fills layer l's attention bias;
  // bias_factors, where given, are that bias's factors (the image stream's pos_q, pos_k).
  std::vector<int> run_encoder_stack(
      float* x, int64_t batch, int64_t t, const uint8_t* key_padding,
      const std::function<const float*(int layer, float* scratch)>& make_bias, int64_t bias_len,
      const ExitDecision& decide, float* out, Arena& arena,
      std::pair<const float*, const float*> bias_factors = {}) const;
  void embed_tokens(const int64_t* tokens, int64_t n, float* out) const;
  // Number of leading non-pad tokens; pads must form a suffix (right padding).
  static int64_t valid_prefix(const int64_t* tokens, int64_t t, int64_t pad, const char* what,
                              int64_t sample);
  void add_text_rel_bias(const Tensor& table, int64_t t, float* bias, int64_t ld, int64_t q_offset,
                         int64_t k_offset, int64_t tq) const;
  // Whether cross-attention reads the encoder K/V in bf16, head-major (bf16 and int8 compute
  // types on CPUs that multiply bf16 natively): the one-pass decoder and decoding steps alike.
  bool cross_kv_bf16() const;

  ModelConfig config_;
  ComputeType compute_type_ = ComputeType::kF32;
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

  mutable std::mutex grid_mutex_;
  mutable std::map<std::pair<int64_t, int64_t>, ImageGridCache> grid_cache_;
};

}  // namespace mue
