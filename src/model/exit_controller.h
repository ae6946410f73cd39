// The one place that decides early exits. Every stack (image stream, text stream, decoder)
// calls it after every layer with the cosine similarity of the layer's output and input; it
// knows thresholds, schedules and statistics, and nothing about attention.
#pragma once

#include <cstdint>
#include <functional>
#include <utility>

#include "mue/exit_policy.h"

namespace mue {

enum class ExitStack { kImage = 0, kText = 1, kDecoder = 2 };

// The exit loop's one decision callback: after layer `layer` (0-based, never the last) of a
// stack, should exit group `group` stop there? `cosine` is cos(output, input) over the group's
// unpadded elements; the loop computes it only when needs_cosine() (fixed depths need none).
// Empty: the stack runs to full depth.
class ExitDecision {
 public:
  using Rule = std::function<bool(int layer, int64_t group, double cosine)>;
  ExitDecision() = default;
  explicit ExitDecision(Rule rule, bool needs_cosine = true)
      : rule_(std::move(rule)), needs_cosine_(needs_cosine) {}

  explicit operator bool() const { return static_cast<bool>(rule_); }
  bool needs_cosine() const { return needs_cosine_; }
  bool operator()(int layer, int64_t group, double cosine) const {
    return rule_(layer, group, cosine);
  }

 private:
  Rule rule_;
  bool needs_cosine_ = true;
};

class ExitController {
 public:
  explicit ExitController(ExitPolicy policy);
  const ExitPolicy& policy() const { return policy_; }

  // Threshold of the decoder at generation step `step` of at most `max_len` (spec 1.4); a
  // negative step (a single non-incremental pass, as entailment) gets the static threshold.
  double decoder_threshold(int step, int max_len) const;
  // After layer `layer` (0-based) of `num_layers`: stop here? `step`/`max_len` matter only for
  // the decoder schedule. The last layer always stops.
  bool should_exit(ExitStack stack, int layer, int num_layers, double cosine, int step = -1,
                   int max_len = 0) const;
  // Whether cosines are needed at all (false for full depth and fixed depths).
  bool uses_similarity(ExitStack stack) const;
  // Whether the stack can stop early at all (a threshold below 1 or a fixed depth).
  bool can_exit(ExitStack stack) const;
  // The stack's decision for its exit loop, or an empty one for full depth. `step`/`max_len`:
  // the decoding step of incremental generation (its threshold schedule); a negative step is a
  // single pass (static threshold). The controller must outlive the returned decision.
  ExitDecision decision(ExitStack stack, int num_layers, int step = -1, int max_len = 0) const;

 private:
  ExitPolicy policy_;
};

}  // namespace mue
