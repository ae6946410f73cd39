// layer_norm, gelu, softmax and cosine_similarity against plain double-precision loops and
// known values.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "expect_close.h"
#include "kernels/kernels.h"
#include "kernels/quantize.h"
#include "kernels/row_softmax.h"
#include "mue/runtime.h"
#include "mue/tensor.h"

namespace mue::kernels {
namespace {

using mue::testing::expect_close;
constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<float> reference_layer_norm(const std::vector<float>& x, const float* gamma,
                                        const float* beta, int64_t rows, int64_t cols, double eps) {
  std::vector<float> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = x.data() + r * cols;
    double mean = 0, var = 0;
    for (int64_t c = 0; c < cols; ++c) mean += in[c];
    mean /= cols;
    for (int64_t c = 0; c < cols; ++c) var += (in[c] - mean) * (in[c] - mean);
    var /= cols;
    for (int64_t c = 0; c < cols; ++c) {
      double v = (in[c] - mean) / std::sqrt(var + eps);
      if (gamma != nullptr) v *= gamma[c];
      if (beta != nullptr) v += beta[c];
      y[r * cols + c] = static_cast<float>(v);
    }
  }
  return y;
}

TEST(KernelsLayerNorm, MatchesReferenceWithAndWithoutAffine) {
  for (int64_t cols : {1, 13, 768, 1024}) {
    const int64_t rows = 37;
    // An offset and a spread like real activations; the offset tests the two-pass variance.
    const auto x = random_vector(rows * cols, cols, 3.f, 9.f);
    const auto gamma = random_vector(cols, cols + 1, 0.5f, 1.5f);
    const auto beta = random_vector(cols, cols + 2);
    for (int affine = 0; affine < 4; ++affine) {
      SCOPED_TRACE("cols=" + std::to_string(cols) + " affine=" + std::to_string(affine));
      const float* g = (affine & 1) ? gamma.data() : nullptr;
      const float* b = (affine & 2) ? beta.data() : nullptr;
      std::vector<float> y(x.size(), NAN);
      layer_norm(x.data(), g, b, y.data(), rows, cols, 1e-5f);
      expect_close(y, reference_layer_norm(x, g, b, rows, cols, 1e-5), 2e-5, 2e-5);
    }
  }
}

TEST(KernelsLayerNorm, InPlaceGivesTheSameAsOutOfPlace) {
  const int64_t rows = 9, cols = 768;
  auto x = random_vector(rows * cols, 4);
  const auto gamma = random_vector(cols, 5), beta = random_vector(cols, 6);
  const auto expected = reference_layer_norm(x, gamma.data(), beta.data(), rows, cols, 1e-5);
  layer_norm(x.data(), gamma.data(), beta.data(), x.data(), rows, cols, 1e-5f);
  expect_close(x, expected, 2e-5, 2e-5);
}

TEST(KernelsLayerNorm, ConstantRowGivesBeta) {
  const int64_t cols = 20;
  std::vector<float> x(cols, 4.25f), y(cols);
  const auto gamma = random_vector(cols, 7), beta = random_vector(cols, 8);
  layer_norm(x.data(), gamma.data(), beta.data(), y.data(), 1, cols, 1e-5f);
  expect_close(y, beta, 0, 0);
}

TEST(KernelsGelu, KnownValues) {
  // Exact erf GELU x * Phi(x), values from the normal CDF.
  std::vector<float> x{0.f, 1.f, -1.f, 0.5f, 2.f, -3.f, 10.f, -10.f};
  const std::vector<float> expected{0.f,           0.8413447461f,  -0.1586552539f, 0.3457312306f,
                                    1.9544997361f, -0.0040496970f, 10.f,           0.f};
  gelu(x.data(), static_cast<int64_t>(x.size()));
  // For x < -2, 1 + erf(x / sqrt 2) cancels in fp32 (PyTorch's formula does the same), so the
  // tail is held to an absolute bound.
  expect_close(x, expected, 5e-7, 2e-6);
}

TEST(KernelsGelu, MatchesErfFormulaOverARange) {
  // Odd length, larger than one chunk, so the parallel split and the tail are both covered.
  const int64_t n = 100003;
  std::vector<float> x(n), expected(n);
  for (int64_t i = 0; i < n; ++i) {
    x[i] = -8.f + 16.f * static_cast<float>(i) / (n - 1);
    expected[i] = static_cast<float>(0.5 * x[i] * (1 + std::erf(x[i] / std::sqrt(2.0))));
  }
  gelu(x.data(), n);
  expect_close(x, expected, 1e-6, 2e-6);
}

std::vector<float> reference_softmax(const std::vector<float>& x, int64_t rows, int64_t cols) {
  std::vector<float> y(x.size(), 0.f);
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = x.data() + r * cols;
    double max = -INFINITY;
    for (int64_t c = 0; c < cols; ++c) max = std::max<double>(max, in[c]);
    if (max == -INFINITY) continue;
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += std::exp(in[c] - max);
    for (int64_t c = 0; c < cols; ++c) y[r * cols + c] = std::exp(in[c] - max) / sum;
  }
  return y;
}

TEST(KernelsSoftmax, MatchesReference) {
  for (int64_t cols : {1, 7, 900, 1001}) {
    const int64_t rows = 33;
    auto x = random_vector(rows * cols, cols, -20.f, 20.f);
    const auto expected = reference_softmax(x, rows, cols);
    softmax(x.data(), rows, cols);
    SCOPED_TRACE("cols=" + std::to_string(cols));
    expect_close(x, expected, 1e-7, 1e-5);
  }
}

TEST(KernelsSoftmax, MinusInfinityGetsZeroAndAllMaskedRowIsZero) {
  std::vector<float> x{-kInf, 0.f,   -kInf,  1.f,    -kInf, -kInf,
                       -kInf, -kInf, 1000.f, 1001.f, -kInf, 1002.f};
  const auto expected = reference_softmax(x, 3, 4);
  softmax(x.data(), 3, 4);
  expect_close(x, expected, 1e-7, 1e-6);
  EXPECT_EQ(x[0], 0.f);
  EXPECT_EQ(x[2], 0.f);
  for (int c = 4; c < 8; ++c) EXPECT_EQ(x[c], 0.f) << "all -inf row, column " << c;
  EXPECT_EQ(x[10], 0.f);
}

TEST(KernelsSoftmax, RowsSumToOne) {
  auto x = random_vector(5 * 300, 9, -50.f, 50.f);
  softmax(x.data(), 5, 300);
  for (int r = 0; r < 5; ++r) {
    double sum = 0;
    for (int c = 0; c < 300; ++c) sum += x[r * 300 + c];
    EXPECT_NEAR(sum, 1.0, 1e-5) << "row " << r;
  }
}

// The bf16 attention path's exp (a cubic for 2^f): within 1e-4 relative of std::exp over the
// whole range softmax sees, exactly 0 for -inf and far below the max, bf16 bits of the value.
TEST(KernelsSoftmax, Bf16RowExpMatchesStdExp) {
  std::vector<float> x;
  for (int i = 0; i <= 20000; ++i) x.push_back(-100.f + 0.005f * static_cast<float>(i));
  x.push_back(-std::numeric_limits<float>::infinity());
  const float max = 0.f;
  std::vector<uint16_t> y(x.size());
  const float sum =
      detail::exp_shifted_row_bf16(x.data(), static_cast<int64_t>(x.size()), max, y.data());
  double want_sum = 0;
  for (size_t j = 0; j < x.size(); ++j) {
    const double want = std::exp(static_cast<double>(x[j]) - max);
    want_sum += want;
    const double got = detail::from_bf16(y[j]);
    if (want < std::numeric_limits<float>::min()) {
      EXPECT_LE(got, std::numeric_limits<float>::min()) << "x = " << x[j];  // subnormal: flushed
    } else {
      EXPECT_NEAR(got / want, 1.0, 1e-4 + std::ldexp(1.0, -8)) << "x = " << x[j];
    }
  }
  EXPECT_EQ(y.back(), 0) << "-inf gets exactly zero weight";
  EXPECT_NEAR(sum / want_sum, 1.0, 1e-4);
  std::vector<float> masked(5, -std::numeric_limits<float>::infinity());
  std::vector<uint16_t> zeros(5, 7);
  EXPECT_EQ(detail::exp_shifted_row_bf16(masked.data(), 5, masked[0], zeros.data()), 0.f);
  EXPECT_EQ(zeros, std::vector<uint16_t>(5, 0));
}

// softmax_weights_bf16: the row max and the bf16 weights in one call. Its AVX-512 version (on
// CPUs with AVX512-BF16) must give the portable loop's weights, and its sum up to the order of
// the additions, for every tail length, masked keys and an all-masked row.
TEST(KernelsSoftmax, Bf16RowWeightsNativeMatchPortable) {
  const float inf = std::numeric_limits<float>::infinity();
  uint32_t seed = 40;
  for (int64_t n : {1, 2, 15, 16, 17, 31, 33, 64, 100, 900, 934, 1000}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    auto x = random_vector(n, seed++, -30.f, 30.f);
    if (n > 3) x[n / 3] = x[n - 1] = -inf;  // masked keys, one of them in the tail
    std::vector<uint16_t> portable(n, 7), native(n, 7), reference(n, 7);
    const float max = *std::max_element(x.begin(), x.end());
    const float want = detail::exp_shifted_row_bf16(x.data(), n, max, reference.data());
    const float sum_portable = detail::softmax_weights_bf16(x.data(), n, portable.data(), false);
    EXPECT_EQ(portable, reference);
    EXPECT_EQ(sum_portable, want);
    const float sum_native = detail::softmax_weights_bf16(x.data(), n, native.data());
    EXPECT_EQ(native, reference) << "native: " << detail::native_bf16_conversion();
    EXPECT_NEAR(sum_native, want, 1e-6f * want);
    if (n > 3) {
      EXPECT_EQ(native[n / 3], 0) << "a masked key gets exactly zero weight";
    }
  }
  for (bool allow_native : {false, true}) {
    std::vector<float> masked(21, -inf);
    std::vector<uint16_t> zeros(21, 7);
    EXPECT_EQ(detail::softmax_weights_bf16(masked.data(), 21, zeros.data(), allow_native), 0.f);
    EXPECT_EQ(zeros, std::vector<uint16_t>(21, 0));
  }
}

// The log-softmax normaliser of beam search: exactly the std::exp loop without `fast`; with it
// (on CPUs with AVX-512 and AVX512-BF16) within 1e-6 of it, for every tail, -inf entries
// (banned words) adding nothing, and a vocabulary-sized row.
TEST(KernelsSoftmax, SumOfShiftedExponentials) {
  for (int64_t n : {1, 15, 16, 17, 100, 59457}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    auto x = random_vector(n, 50 + uint32_t(n), -40.f, 10.f);
    if (n > 2) x[1] = -std::numeric_limits<float>::infinity();
    const float max = *std::max_element(x.begin(), x.end());
    double want = 0;
    for (float v : x) want += std::exp(v - max);
    EXPECT_EQ(sum_exp_shifted(x.data(), n, max, false), want);
    EXPECT_NEAR(sum_exp_shifted(x.data(), n, max, true), want, 1e-6 * want);
  }
}

TEST(KernelsCosine, KnownValues) {
  const float a[] = {1, 2, 3}, b[] = {4, 5, 6}, minus_a[] = {-1, -2, -3};
  const float e0[] = {1, 0}, e1[] = {0, 1}, zero[] = {0, 0, 0};
  EXPECT_NEAR(cosine_similarity(a, b, 3), 32.0 / std::sqrt(14.0 * 77.0), 1e-12);
  EXPECT_NEAR(cosine_similarity(a, a, 3), 1.0, 1e-12);
  EXPECT_NEAR(cosine_similarity(a, minus_a, 3), -1.0, 1e-12);
  EXPECT_EQ(cosine_similarity(e0, e1, 2), 0.0);
  EXPECT_EQ(cosine_similarity(a, zero, 3), 0.0);
  EXPECT_EQ(cosine_similarity(zero, zero, 3), 0.0);
  EXPECT_EQ(cosine_similarity(a, b, 0), 0.0);
}

TEST(KernelsCosine, LongVectorsMatchReferenceAndIgnoreThreadCount) {
  // A layer output at 900 image tokens x 768 (spec 1.8 compares consecutive layers).
  const int64_t n = 900 * 768;
  const auto a = random_vector(n, 10);
  auto b = a;
  const auto noise = random_vector(n, 11, -0.1f, 0.1f);
  for (int64_t i = 0; i < n; ++i) b[i] += noise[i];
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  set_num_threads(1);
  const double one_thread = cosine_similarity(a.data(), b.data(), n);
  set_num_threads(0);
  const double all_threads = cosine_similarity(a.data(), b.data(), n);
  EXPECT_NEAR(one_thread, ab / std::sqrt(aa * bb), 1e-12);
  EXPECT_EQ(one_thread, all_threads);
}

TEST(KernelsRowwise, BadArgumentsThrowError) {
  std::vector<float> x(4);
  EXPECT_THROW(layer_norm(x.data(), nullptr, nullptr, x.data(), -1, 4, 1e-5f), Error);
  EXPECT_THROW(layer_norm(nullptr, nullptr, nullptr, x.data(), 1, 4, 1e-5f), Error);
  EXPECT_THROW(layer_norm(x.data(), nullptr, nullptr, nullptr, 1, 4, 1e-5f), Error);
  EXPECT_THROW(softmax(nullptr, 1, 4), Error);
  EXPECT_THROW(softmax(x.data(), 1, -4), Error);
  EXPECT_THROW(gelu(nullptr, 4), Error);
  EXPECT_THROW(gelu(x.data(), -1), Error);
  EXPECT_THROW(cosine_similarity(nullptr, x.data(), 4), Error);
  EXPECT_THROW(cosine_similarity(x.data(), x.data(), -4), Error);
}

}  // namespace
}  // namespace mue::kernels
