// The one loop over a stack's layers with early exits, shared by the encoder streams, the
// whole-sequence decoder pass and incremental decoding (spec 1.2-1.3): run the layer on the
// active rows, ask the exit decision per group, hand exited groups' rows out, and compact the
// rest so that the next layer computes only them. Each stack says only how to run a layer.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/exit_controller.h"

namespace mue {

// The rows that take one exit decision together: one sample of an encoder stream or of a
// whole-sequence decoder pass (its T positions), or one sample's beams at a decoding step.
struct ExitGroup {
  int64_t id = 0;          // the group's index for the decision and the layer counts
  int64_t rows = 0;        // rows of `width` elements in the buffers
  int64_t valid_rows = 0;  // its leading rows that the cosine reads (right padding excluded)
  int64_t offset = 0;      // its first row in the compacted buffers (kept by the loop)
};

struct LayerStack {
  int layers = 0;
  int64_t width = 0;  // elements per row (d_model)
  // Runs layer `layer` on the active groups, whose rows lie compacted in `in` (in the order of
  // `active`, `active_rows` in all), writing the same rows of `out`.
  std::function<void(int layer, const std::vector<ExitGroup>& active, int64_t active_rows,
                     const float* in, float* out)>
      run_layer;
  // A group stops after `layer`: its output rows (valid until the loop's next layer).
  std::function<void(int layer, const ExitGroup& group, const float* rows)> on_exit;
  // Optional (the decoder's): the answer's confidence of a group after `layer` from its output
  // rows, for rules that read it; asked only when a rule does.
  std::function<double(int layer, const ExitGroup& group, const float* rows)> confidence;
};

// Runs `stack` over `groups`, whose rows lie compacted in `x` (offsets in order); `y` is
// scratch of the same size. Both buffers are overwritten. Returns the layers each group used,
// indexed by ExitGroup::id (ids must lie in 0..groups.size()-1).
std::vector<int> run_with_exits(const LayerStack& stack, std::vector<ExitGroup> groups, float* x,
                                float* y, const ExitDecision& decide);

}  // namespace mue
