// mue: the public API. Load a model directory once, then caption images and answer
// visual-entailment queries; every result carries its exit statistics and the wall-clock time of
// each stage.
//
//   mue::EngineOptions options;
//   options.exit_policy = mue::ExitPolicy::load("policy.json");   // the engine's default
//   auto engine = mue::Engine::load("models/mue-scenes-small", options);
//   mue::CaptionResult c = engine->caption("scene.png");
//   mue::CallOptions full;                                          // per call: overrides
//   full.exit_policy = mue::ExitPolicy::full_depth();
//   mue::EntailmentResult e = engine->entail("scene.png", "", "there is a red shirt", full);
//
// Threads: a loaded Engine is immutable apart from its image cache (which has its own lock), so
// one Engine serves any number of threads calling caption/entail/prepare_image at once. Each
// call brings its own scratch memory and runs with EngineOptions::threads OpenMP threads on the
// thread that executes it. With EngineOptions::workers > 0 the calls run on the Engine's own
// worker threads instead (one sample at a time per worker, with the cores shared out among the
// workers, sharing the weights), which gives the most throughput when many calls are in flight.
// Results do not depend on which thread ran them or on what ran before: a call gives the same bits
// as the same call made alone (at the same thread count).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "mue/compute_type.h"
#include "mue/config.h"
#include "mue/exit_policy.h"
#include "mue/tensor.h"

namespace mue {

// Beam-search settings for captioning (fairseq's SequenceGenerator, spec 2.2).
struct GenerationSettings {
  int beam_size = 5;  // 1 = greedy
  int max_len = 16;   // generated tokens before the forced EOS
  int min_len = 1;    // EOS is banned before this many tokens
  int no_repeat_ngram_size = 3;
  double length_penalty = 1.0;  // final score = sum log p / length^penalty
  // Throws mue::Error naming the field and the reason.
  void validate() const;
  nlohmann::json to_json() const;
};

struct EngineOptions {
  // OpenMP threads for one call (each call, whichever thread runs it). 0: all cores for models
  // of width 512 or more (OFA-medium and up), one thread for narrower ones, whose layers are too
  // small to split; with workers, the cores divided among the workers.
  int threads = 0;
  // 0: calls run on the calling thread. N > 0: N worker threads run the calls' samples, each
  // sample on one worker (as CTranslate2's inter_threads); a batch is spread over the workers.
  int workers = 0;
  // Defaults for calls that do not pass their own.
  ExitPolicy exit_policy;
  std::optional<GenerationSettings> generation;  // unset: the model config's caption settings
  size_t image_cache_bytes = size_t{256} << 20;  // decomposed mode: image-side reuse, 0 = off
  int64_t max_image_pixels = int64_t{64} << 20;  // larger images are refused
  // The GEMMs' and convolutions' precision (mue/compute_type.h): f32 (bit-exact with earlier
  // releases), bf16, int8, or auto (the fastest this CPU runs natively). A type oneDNN cannot
  // run on this CPU (bf16 without AVX-512) is refused at load.
  ComputeType compute_type = ComputeType::kF32;
};

// Per-call overrides of the engine's defaults.
struct CallOptions {
  std::optional<ExitPolicy> exit_policy;
  std::optional<GenerationSettings> generation;  // captioning only
  // Also split the decoder's time by phase (StageSeconds::decoder_split), for profiling. The
  // results are the same bits either way.
  bool decoder_split = false;
};

// The decoder's wall-clock time by phase (CallOptions::decoder_split), in seconds per sample
// as StageSeconds. The phases never overlap, and `rest` is the decoder's time outside them.
struct DecoderSplit {
  double gemm = 0;               // the decoder layers' linear layers: q/k/v/out projections, FFN
  double cross_key_value = 0;    // the cross-attention K/V projections of the encoder output
  double attention = 0;          // the attention kernel calls, self and cross
  double output_projection = 0;  // the final LayerNorm and the tied projection to the vocabulary
  // Captioning's beam search over each step's logits: log-softmax, n-gram ban, top-k, and the
  // self-attention cache's reorder. Entailment: 0.
  double search = 0;
  double rest = 0;  // the decoder's time outside the above: embedding, LayerNorms, exits, ...
  double output_projection_bytes = 0;  // weight bytes the output projection read
  int64_t steps = 0;                   // decoder steps the call's batch ran (entailment: 1)
  nlohmann::json to_json() const;
};

// Wall-clock seconds per stage. In a batch, each sample carries the batch's time divided by
// the batch size.
struct StageSeconds {
  double preprocess = 0, resnet = 0, image_stream = 0, text_stream = 0, decoder = 0, total = 0;
  std::optional<DecoderSplit> decoder_split;  // set when the call asked for it
  nlohmann::json to_json() const;             // "decoder_split" only when set
};

// Where each stack stopped. Layer counts are layers used (1..N).
struct ExitStatistics {
  int image_layers = 0, text_layers = 0;     // per encoder stream
  std::vector<int> decoder_layers;           // per generated token (captioning) or one (entailment)
  int encoder_depth = 0, decoder_depth = 0;  // N_E and N_D of the model
  bool image_reused = false;                 // the image stream came from the cache

  // The paper's expected time reduction (spec 1.6), from layer counts:
  //   1 - (n_E + n_D) / (N_E + N_D), n_E = mean of the image and text streams' layers,
  //   n_D = mean decoder layers over the generated tokens.
  double expected_time_reduction() const;
  double mean_decoder_layers() const;
  nlohmann::json to_json() const;
};

struct CaptionResult {
  std::string caption;
  std::vector<int64_t> tokens;  // generated ids, ending with EOS
  double score = 0;             // length-normalised log probability
  ExitStatistics exits;
  StageSeconds seconds;
  nlohmann::json to_json() const;
};

enum class EntailmentLabel { kEntailment = 0, kNeutral = 1, kContradiction = 2 };
// "entailment", "neutral", "contradiction".
const char* entailment_label_name(EntailmentLabel label);

struct EntailmentResult {
  EntailmentLabel label = EntailmentLabel::kNeutral;
  // Probabilities over the three answers (softmax of their logits at the answer position).
  double p_entailment = 0, p_neutral = 0, p_contradiction = 0;
  ExitStatistics exits;
  StageSeconds seconds;
  const char* label_name() const { return entailment_label_name(label); }
  nlohmann::json to_json() const;
};

// An image decoded, resized and normalised for the model, with a content key for reuse.
struct PreparedImage {
  Tensor pixels;  // [H, W, 3] fp32
  std::array<uint64_t, 2> content_key{};
  std::string name;
  double seconds = 0;  // time spent preparing it
};

struct EntailmentQuery {
  const PreparedImage* image = nullptr;
  std::string premise;  // may be empty: then the prompt without a premise is used
  std::string hypothesis;
};

struct ImageCacheStats {
  size_t hits = 0, entries = 0, bytes = 0;
};

class Engine {
 public:
  // Loads config.json, model.safetensors and the tokenizer files from `model_dir`. Checks the
  // options (the default exit policy against the model's depth, the generation settings).
  static std::unique_ptr<Engine> load(const std::string& model_dir,
                                      const EngineOptions& options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const ModelConfig& config() const;
  const EngineOptions& options() const;
  // The OpenMP threads each call (workers 0) or each worker's sample runs with: threads, or with
  // threads 0 all cores, divided among the workers when there are any.
  int threads_per_call() const;
  // The compute type the model was loaded in (`auto` resolved), and the bytes its weights hold.
  ComputeType compute_type() const;
  size_t weight_bytes() const;
  // The defaults calls use when their CallOptions leave a field unset.
  const ExitPolicy& default_exit_policy() const;
  const GenerationSettings& default_generation() const;
  // Throws mue::Error naming the field if `policy` is invalid or deeper than the model.
  void check_exit_policy(const ExitPolicy& policy) const;

  PreparedImage prepare_image(const std::string& path) const;
  PreparedImage prepare_image(const uint8_t* data, size_t size, const std::string& name) const;

  CaptionResult caption(const std::string& image_path, const CallOptions& call = {}) const;
  CaptionResult caption(const PreparedImage& image, const CallOptions& call = {}) const;
  std::vector<CaptionResult> caption(const std::vector<const PreparedImage*>& images,
                                     const CallOptions& call = {}) const;

  EntailmentResult entail(const std::string& image_path, const std::string& premise,
                          const std::string& hypothesis, const CallOptions& call = {}) const;
  EntailmentResult entail(const PreparedImage& image, const std::string& premise,
                          const std::string& hypothesis, const CallOptions& call = {}) const;
  // Queries on the same image share one image-stream pass (decomposed mode).
  std::vector<EntailmentResult> entail(const std::vector<EntailmentQuery>& queries,
                                       const CallOptions& call = {}) const;

  // Image-side reuse (decomposed mode): statistics, and emptying the cache (benchmarks do, so
  // that every setting pays for its own image passes).
  ImageCacheStats image_cache_stats() const;
  void clear_image_cache() const;

  // The prompt tokens the tasks feed the encoder (BOS ... EOS).
  std::vector<int64_t> caption_prompt() const;
  std::vector<int64_t> entailment_prompt(const std::string& premise,
                                         const std::string& hypothesis) const;
  std::string decode_tokens(const std::vector<int64_t>& tokens) const;

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mue
