// mue: the public API. Load a model directory, set threads and the exit policy, then caption
// images and answer visual-entailment queries; every result carries its exit statistics and
// the wall-clock time of each stage.
//
//   auto engine = mue::Engine::load("models/mue-scenes-small");
//   engine->set_exit_policy(mue::ExitPolicy::load("policy.json"));
//   mue::CaptionResult c = engine->caption("scene.png");
//   mue::EntailmentResult e = engine->entail("scene.png", "", "there is a red shirt");
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mue/config.h"
#include "mue/exit_policy.h"
#include "mue/tensor.h"

namespace mue {

class OfaModel;
class Tokenizer;
class ImageEncodingCache;

struct EngineOptions {
  int threads = 0;  // 0: all cores
  ExitPolicy exit_policy;
  size_t image_cache_bytes = size_t{256} << 20;  // decomposed mode: image-side reuse, 0 = off
  int64_t max_image_pixels = int64_t{64} << 20;  // larger images are refused
};

// Wall-clock seconds per stage. In a batch, each sample carries the batch's time divided by
// the batch size.
struct StageSeconds {
  double preprocess = 0, resnet = 0, image_stream = 0, text_stream = 0, decoder = 0, total = 0;
  nlohmann::json to_json() const;
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

struct EntailmentResult {
  std::string label;  // "entailment", "neutral" or "contradiction"
  // Probabilities over the three answers (softmax of their logits at the answer position).
  double p_entailment = 0, p_neutral = 0, p_contradiction = 0;
  ExitStatistics exits;
  StageSeconds seconds;
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

struct GenerationSettings {
  int beam_size = 5, max_len = 16, min_len = 1, no_repeat_ngram_size = 3;
  double length_penalty = 1.0;
};

class Engine {
 public:
  // Loads config.json, model.safetensors and the tokenizer files from `model_dir`.
  static std::unique_ptr<Engine> load(const std::string& model_dir,
                                      const EngineOptions& options = {});
  ~Engine();

  const ModelConfig& config() const;
  void set_threads(int n);
  void set_exit_policy(const ExitPolicy& policy);
  const ExitPolicy& exit_policy() const { return policy_; }
  GenerationSettings& generation() { return generation_; }

  PreparedImage prepare_image(const std::string& path) const;
  PreparedImage prepare_image(const uint8_t* data, size_t size, const std::string& name) const;

  CaptionResult caption(const std::string& image_path);
  CaptionResult caption(const PreparedImage& image);
  std::vector<CaptionResult> caption(const std::vector<const PreparedImage*>& images);

  EntailmentResult entail(const std::string& image_path, const std::string& premise,
                          const std::string& hypothesis);
  EntailmentResult entail(const PreparedImage& image, const std::string& premise,
                          const std::string& hypothesis);
  // Queries on the same image share one image-stream pass (decomposed mode).
  std::vector<EntailmentResult> entail(const std::vector<EntailmentQuery>& queries);

  // Image-side reuse statistics.
  size_t image_cache_hits() const;
  size_t image_cache_entries() const;
  void clear_image_cache();

  // The prompt tokens the tasks feed the encoder (BOS ... EOS).
  std::vector<int64_t> caption_prompt() const;
  std::vector<int64_t> entailment_prompt(const std::string& premise,
                                         const std::string& hypothesis) const;
  std::string decode_tokens(const std::vector<int64_t>& tokens) const;
  OfaModel& model() { return *model_; }

 private:
  Engine() = default;
  struct EncodedBatch;
  EncodedBatch encode_batch(const std::vector<const PreparedImage*>& images,
                            const std::vector<std::vector<int64_t>>& prompts);

  std::unique_ptr<OfaModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ImageEncodingCache> cache_;
  ExitPolicy policy_;
  EngineOptions options_;
  GenerationSettings generation_;
  std::string caption_prompt_text_, entailment_prompt_text_, entailment_prompt_no_premise_;
  std::array<int64_t, 3> answer_ids_{};  // entailment, neutral, contradiction
};

}  // namespace mue
