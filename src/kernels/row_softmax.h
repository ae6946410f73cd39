// Internal to src/kernels: the numerically stable softmax of one row, shared by softmax() and
// attention().
#pragma once

#include <cfloat>
#include <cstdint>
#include <limits>

#include "kernels/eigen.h"

namespace mue::kernels::detail {

// x <- exp(x - max), max being the row's maximum; returns the sum of the new row. Entries equal to
// -inf become exactly 0, and a row whose max is -inf becomes zeros with sum 0.
inline float exp_shifted_row(float* x, int64_t n, float max) {
  Eigen::Map<Eigen::ArrayXf> row(x, n);
  if (max == -std::numeric_limits<float>::infinity()) {
    row.setZero();
    return 0.f;
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
  return sum;
}

// x <- softmax(x). An all -inf row becomes zeros.
inline void softmax_row(float* x, int64_t n) {
  if (n <= 0) return;
  Eigen::Map<Eigen::ArrayXf> row(x, n);
  const float sum = exp_shifted_row(x, n, row.maxCoeff());
  if (sum > 0.f) row *= 1.f / sum;
}

}  // namespace mue::kernels::detail
