// Internal to src/kernels: the numerically stable softmax of one row, shared by softmax() and
// attention().
#pragma once

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/eigen.h"
#include "kernels/quantize.h"

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

// For the bf16 attention path: y <- bf16(exp(x - max)), returning the sum of the unrounded
// values; x is left as it was. The weights are rounded to bf16 (relative error up to 2^-9)
// anyway, so exp is a cubic for 2^g on (0, 1] (relative error 7.5e-5, fitted minimax) times a
// power of two: far fewer instructions than Eigen's exp, which took a fifth of an int8
// image-stream layer. Written so that GCC vectorises it without -fno-trapping-math: no float
// comparisons (the clamp at -126 compares bits, valid as x - max <= 0) and no floor (truncation
// of t <= 0 rounds up, hence g = t - whole + 1). -inf and values below 2^-125 give exactly 0.
inline float exp_shifted_row_bf16(const float* x, int64_t n, float max, uint16_t* y) {
  if (max == -std::numeric_limits<float>::infinity()) {
    std::fill_n(y, n, uint16_t{0});
    return 0.f;
  }
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kC0 = 0.99992522f, kC1 = 0.69583351f, kC2 = 0.22606725f, kC3 = 0.07802446f;
  constexpr uint32_t kMinus126 = 0xC2FC0000u;  // larger bits: more negative (or -inf)
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    const uint32_t bits = std::bit_cast<uint32_t>((x[j] - max) * kLog2e);
    const float t = std::bit_cast<float>(bits < kMinus126 ? bits : kMinus126);
    const float whole = static_cast<float>(static_cast<int32_t>(t));
    const float g = t - whole + 1.f;
    const float p = kC0 + g * (kC1 + g * (kC2 + g * kC3));
    // 2^(whole - 1) from its exponent bits; 0 at whole = -126.
    const float e = p * std::bit_cast<float>((static_cast<int32_t>(whole) + 126) << 23);
    y[j] = bf16_bits(e);
    sum += e;
  }
  return sum;
}

// The attention weights of one row of scores: y <- bf16(exp(x - max(x))) as
// exp_shifted_row_bf16 computes them, returning the sum. With allow_native, on CPUs with
// AVX512-BF16 an AVX-512 version runs instead (row_softmax.cpp): the same arithmetic, but the sum
// is added in 16 lanes, so it may differ from the portable one's in the last bits.
float softmax_weights_bf16(const float* x, int64_t n, uint16_t* y, bool allow_native = true);

// x <- softmax(x). An all -inf row becomes zeros.
inline void softmax_row(float* x, int64_t n) {
  if (n <= 0) return;
  Eigen::Map<Eigen::ArrayXf> row(x, n);
  const float sum = exp_shifted_row(x, n, row.maxCoeff());
  if (sum > 0.f) row *= 1.f / sum;
}

}  // namespace mue::kernels::detail
