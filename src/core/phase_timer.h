// A per-call split of wall-clock time into phases (the decoder's GEMMs, attention, output
// projection, search), for profiling. One loaded model serves many threads, so the accumulator
// belongs to the call, not the model: the task points its thread at one for the call
// (PhaseTimesScope), and scopes around the kernel calls (PhaseScope), on that thread and outside
// OpenMP regions, add their time to it. With no accumulator a scope costs one null test.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace mue {

enum class Phase : int {
  kGemm,              // linear layers inside the decoder layers, with the LayerNorms and residual
                      // adds they fuse (Linear::forward with a LinearFusion)
  kCrossKeyValue,     // the cross-attention K/V projection of the encoder output
  kAttention,         // the attention kernel calls
  kOutputProjection,  // the final LayerNorm and the projection onto the vocabulary
  kSearch,            // beam search over the step's logits
  kCount
};

struct PhaseTimes {
  static constexpr size_t kPhases = static_cast<size_t>(Phase::kCount);
  std::array<double, kPhases> seconds{};
  std::array<double, kPhases> bytes{};  // weight bytes read, where a scope names them
  int64_t steps = 0;                    // decoder steps (count_step)
  int open = -1;  // the innermost open scope's phase: nested time counts for the inner one only

  double operator[](Phase p) const { return seconds[static_cast<size_t>(p)]; }
  double bytes_of(Phase p) const { return bytes[static_cast<size_t>(p)]; }
  double sum() const;
};

// The calling thread's accumulator, or null when nobody asked for a split.
PhaseTimes* phase_times();

// Points the calling thread at `times` (null: off) for the scope's life, then restores the
// previous one.
class PhaseTimesScope {
 public:
  explicit PhaseTimesScope(PhaseTimes* times);
  ~PhaseTimesScope();
  PhaseTimesScope(const PhaseTimesScope&) = delete;
  PhaseTimesScope& operator=(const PhaseTimesScope&) = delete;

 private:
  PhaseTimes* previous_;
};

// Adds the wall-clock time of its life to `phase` of the thread's accumulator, if any; a scope
// opened inside another takes its time out of the outer one, so phases never overlap.
class PhaseScope {
 public:
  explicit PhaseScope(Phase phase, double bytes = 0) : times_(phase_times()) {
    if (times_) begin(phase, bytes);
  }
  ~PhaseScope() {
    if (times_) end();
  }
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;

 private:
  void begin(Phase phase, double bytes);
  void end();
  PhaseTimes* times_;
  int phase_ = 0, parent_ = -1;
  std::chrono::steady_clock::time_point start_;
};

// Counts one decoder step in the thread's accumulator, if any.
void count_phase_step();

}  // namespace mue
