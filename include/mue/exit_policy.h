// MuE exit policy (spec 1.2-1.5): per-stack similarity thresholds, the decoder's threshold
// schedule, fixed-depth exits for ablations, and how skipped decoder layers fill their caches.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

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

struct ExitPolicy {
  // Exit after layer l when cos(output, input) > threshold; thresholds lie in (0, 1] and 1.0
  // never exits.
  double exit_threshold_image = 1.0;
  double exit_threshold_text = 1.0;
  double exit_threshold_decoder = 1.0;
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
const char* skipped_layer_cache_name(SkippedLayerCache c);

}  // namespace mue
