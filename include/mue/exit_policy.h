// MuE exit policy (spec 1.2-1.5): per-stack (optionally per-layer) similarity thresholds, the
// decoder's rule (MuE's cosine or the answer's confidence) and threshold schedule, fixed-depth
// exits for ablations, and how skipped decoder layers fill their caches.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mue {

enum class DecoderSchedule {
  kStatic,    // threshold theta at every step
  kDecaying,  // released MuE code: first third of steps never exit, then 0.9*theta +
              // 0.1*exp(-(t+1)/(T+1))
  kCalm,      // CALM: clip(beta*theta + (1-beta)*exp(-tau*(t+1)/(T+1)), 0, 1)
};

enum class SkippedLayerCache {
  kPropagate,  // skipped layers get K/V projected from the exited hidden state (CALM)
  kReference,  // no K/V entry for skipped steps; bias right-aligned, as the released code
               // (spec 1.3)
};

// What the decoder's exit test reads after a layer.
enum class DecoderRule {
  kCosine,      // MuE: cos(layer output, layer input) > threshold
  kConfidence,  // the answer's softmax confidence at this layer (final LayerNorm and output
                // projection, as the full-depth head) > threshold
};

// How the confidence rule measures an answer distribution.
enum class ConfidenceMeasure {
  kTop1,    // the largest probability
  kMargin,  // the largest minus the second largest (CALM's softmax margin)
};

struct ExitPolicy {
  // Exit after layer l when cos(output, input) > threshold; thresholds lie in (0, 1] and 1.0
  // never exits.
  double exit_threshold_image = 1.0;
  double exit_threshold_text = 1.0;
  double exit_threshold_decoder = 1.0;
  // Per layer, optional: threshold after layer l (0-based) for l = 0..layers-2 (the last layer
  // always stops); when non-empty it replaces the stack's single threshold. The length is
  // checked against the model (ExitController, Engine::check_exit_policy).
  std::vector<double> exit_thresholds_image;
  std::vector<double> exit_thresholds_text;
  std::vector<double> exit_thresholds_decoder;
  DecoderRule decoder_rule = DecoderRule::kCosine;
  // The confidence rule: exit when the measure exceeds the threshold, in (0, 1]; 1.0 never
  // exits. Entailment reads the three answer tokens, captioning the whole vocabulary. The
  // decoder schedule applies to these thresholds as to the cosine's.
  double confidence_threshold = 1.0;
  std::vector<double> confidence_thresholds;  // per layer, as exit_thresholds_*
  ConfidenceMeasure confidence_measure = ConfidenceMeasure::kTop1;
  DecoderSchedule decoder_schedule = DecoderSchedule::kStatic;
  double calm_beta = 0.9;
  double calm_tau = 1.0;
  // Fixed depth: every sample exits after this many layers (0 = off; overrides thresholds).
  int fixed_depth_image = 0;
  int fixed_depth_text = 0;
  int fixed_depth_decoder = 0;
  SkippedLayerCache skipped_layer_cache = SkippedLayerCache::kPropagate;

  static ExitPolicy full_depth() { return {}; }
  // Throws mue::Error naming the field and the reason.
  void validate() const;
  static ExitPolicy from_json(const nlohmann::json& j, const std::string& source = "exit policy");
  static ExitPolicy load(const std::string& path);
  nlohmann::json to_json() const;
};

const char* decoder_schedule_name(DecoderSchedule s);
const char* decoder_rule_name(DecoderRule r);
const char* confidence_measure_name(ConfidenceMeasure m);
const char* skipped_layer_cache_name(SkippedLayerCache c);

}  // namespace mue
