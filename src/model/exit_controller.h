// The one place that decides early exits. Every stack (image stream, text stream, decoder)
// calls it after every layer with the cosine similarity of the layer's output and input; it
// knows thresholds, schedules and statistics, and nothing about attention.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <vector>

#include "mue/exit_policy.h"

namespace mue {

enum class ExitStack { kImage = 0, kText = 1, kDecoder = 2 };

// Per-layer exit test, called after every layer of a stack with each active sample's cosine
// similarity between the layer's output and input; returns true to stop that sample there.
// `layer` is 0-based; `sample` is the sample's index in the call's batch.
using ExitTest = std::function<bool(int layer, int64_t sample, double cosine)>;

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
  // The stack's test for a single pass (static decoder threshold), or null for full depth.
  // The controller must outlive the returned function.
  ExitTest test_for(ExitStack stack, int num_layers) const;

 private:
  ExitPolicy policy_;
};

}  // namespace mue
