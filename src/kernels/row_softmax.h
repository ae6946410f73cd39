// Internal to src/kernels: the numerically stable softmax of one row, shared by softmax() and
// attention().
#pragma once

#include <cfloat>
#include <cstdint>
#include <limits>

#include "kernels/eigen.h"

namespace mue::kernels::detail {

// x <- out_scale * softmax(x). Entries equal to -inf get exactly 0; an all -inf row becomes zeros.
inline void softmax_row(float* x, int64_t n, float out_scale = 1.f) {
  if (n <= 0) return;
  Eigen::Map<Eigen::ArrayXf> row(x, n);
  const float max = row.maxCoeff();
  if (max == -std::numeric_limits<float>::infinity()) {
    row.setZero();
    return;
  }
  row = (row - max).exp();
  // Eigen's vectorised exp clamps its input at -88.7 and does not promise exp(-inf) == 0; the
  // flush (fused with the sum) guarantees masked keys exactly zero weight.
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    const float e = x[j] < FLT_MIN ? 0.f : x[j];
    x[j] = e;
    sum += e;
  }
  row *= out_scale / sum;
}

}  // namespace mue::kernels::detail
