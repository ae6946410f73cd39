// Wall-clock timing of the engine's stages.
#pragma once

#include <chrono>

namespace mue {

// Wall-clock seconds per stage, accumulated by the calls that receive it.
struct StageTimes {
  double resnet = 0, image_stream = 0, text_stream = 0, decoder = 0;
};

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  // Seconds since construction or the previous lap.
  double lap() {
    auto now = std::chrono::steady_clock::now();
    double s = std::chrono::duration<double>(now - start_).count();
    start_ = now;
    return s;
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace mue
