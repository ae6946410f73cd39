#include "core/phase_timer.h"

#include <numeric>

namespace mue {
namespace {

thread_local PhaseTimes* current_times = nullptr;

}  // namespace

double PhaseTimes::sum() const { return std::accumulate(seconds.begin(), seconds.end(), 0.0); }

PhaseTimes* phase_times() { return current_times; }

PhaseTimesScope::PhaseTimesScope(PhaseTimes* times) : previous_(current_times) {
  current_times = times;
}

PhaseTimesScope::~PhaseTimesScope() { current_times = previous_; }

void PhaseScope::begin(Phase phase, double bytes) {
  phase_ = static_cast<int>(phase);
  parent_ = times_->open;
  times_->open = phase_;
  times_->bytes[static_cast<size_t>(phase_)] += bytes;
  start_ = std::chrono::steady_clock::now();
}

void PhaseScope::end() {
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  times_->seconds[static_cast<size_t>(phase_)] += s;
  if (parent_ >= 0) times_->seconds[static_cast<size_t>(parent_)] -= s;
  times_->open = parent_;
}

void count_phase_step() {
  if (current_times) ++current_times->steps;
}

}  // namespace mue
