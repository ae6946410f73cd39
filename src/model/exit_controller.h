// The one place that decides early exits. Every stack (image stream, text stream, decoder)
// calls it after every layer with the cosine similarity of the layer's output and input; it
// knows thresholds, schedules and statistics, and nothing about attention.
#pragma once

#include <array>
#include <vector>

#include "mue/exit_policy.h"

namespace mue {

enum class ExitStack { kImage = 0, kText = 1, kDecoder = 2 };

class ExitController {
 public:
  explicit ExitController(ExitPolicy policy);
  const ExitPolicy& policy() const { return policy_; }

  // Threshold of the decoder at generation step `step` of at most `max_len` (spec 1.4).
  double decoder_threshold(int step, int max_len) const;
  // After layer `layer` (0-based) of `num_layers`: stop here? `step`/`max_len` matter only for
  // the decoder schedule. The last layer always stops.
  bool should_exit(ExitStack stack, int layer, int num_layers, double cosine, int step = 0,
                   int max_len = 0) const;
  // Whether cosines are needed at all (false for full depth and fixed depths).
  bool uses_similarity(ExitStack stack) const;

 private:
  ExitPolicy policy_;
};

}  // namespace mue
