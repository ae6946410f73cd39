#include "model/exit_loop.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "kernels/kernels.h"
#include "mue/tensor.h"

namespace mue {

std::vector<int> run_with_exits(const LayerStack& stack, std::vector<ExitGroup> active, float* x,
                                float* y, const ExitDecision& decide) {
  const int64_t width = stack.width;
  std::vector<int> used(active.size(), 0);
  int64_t active_rows = 0;
  for (ExitGroup& g : active) {
    if (g.id < 0 || g.id >= static_cast<int64_t>(used.size()))
      throw Error("exit loop: group id " + std::to_string(g.id) + " outside 0.." +
                  std::to_string(used.size() - 1));
    g.offset = active_rows;
    active_rows += g.rows;
  }
  float* in = x;
  float* out = y;
  for (int layer = 0; layer < stack.layers && !active.empty(); ++layer) {
    stack.run_layer(layer, active, active_rows, in, out);
    const bool last = layer + 1 == stack.layers;
    // Decide for every group before moving any rows: the cosine reads each group's input too.
    std::vector<bool> stop(active.size(), last);
    if (!last && decide)
      for (size_t i = 0; i < active.size(); ++i) {
        const ExitGroup& g = active[i];
        const float* g_out = out + g.offset * width;
        const float* g_in = in + g.offset * width;
        // One cosine over the group's whole unpadded tensor (spec 1.2.4, 1.3); both signals are
        // computed only if the rule reads them.
        ExitSignals signals(
            [&] { return kernels::cosine_similarity(g_out, g_in, g.valid_rows * width); },
            stack.confidence
                ? ExitSignals::Source([&] { return stack.confidence(layer, g, g_out); })
                : ExitSignals::Source());
        stop[i] = decide(layer, g.id, signals);
      }
    // Exited groups leave; the rest close ranks in `out` (offsets only move down, so memmove in
    // place is safe), which becomes the next layer's input.
    size_t kept = 0;
    int64_t rows = 0;
    for (size_t i = 0; i < active.size(); ++i) {
      ExitGroup g = active[i];
      if (stop[i]) {
        used[g.id] = layer + 1;
        stack.on_exit(layer, g, out + g.offset * width);
        continue;
      }
      if (g.offset != rows)
        std::memmove(out + rows * width, out + g.offset * width,
                     static_cast<size_t>(g.rows * width) * sizeof(float));
      g.offset = rows;
      rows += g.rows;
      active[kept++] = g;
    }
    active.resize(kept);
    active_rows = rows;
    std::swap(in, out);
  }
  return used;
}

}  // namespace mue
