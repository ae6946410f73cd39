// linear() against a plain double-precision loop: y = act(x w^T + b), w in PyTorch [N,K] layout.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "expect_close.h"
#include "kernels/kernels.h"
#include "mue/runtime.h"
#include "mue/tensor.h"

namespace mue::kernels {
namespace {

using mue::testing::expect_close;

std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

double reference_activation(double v, Activation act) {
  switch (act) {
    case Activation::kRelu:
      return v > 0 ? v : 0;
    case Activation::kGelu:
      return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
    case Activation::kNone:
      break;
  }
  return v;
}

std::vector<float> reference_linear(const std::vector<float>& x, const std::vector<float>& w,
                                    const float* bias, int64_t m, int64_t n, int64_t k,
                                    Activation act) {
  std::vector<float> y(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = bias != nullptr ? bias[j] : 0.0;
      for (int64_t p = 0; p < k; ++p) acc += double(x[i * k + p]) * w[j * k + p];
      y[i * n + j] = static_cast<float>(reference_activation(acc, act));
    }
  }
  return y;
}

const char* activation_name(Activation act) {
  return act == Activation::kNone ? "none" : act == Activation::kRelu ? "relu" : "gelu";
}

struct Shape3 {
  int64_t m, n, k;
};

TEST(KernelsLinear, MatchesReferenceAcrossShapesBiasAndActivations) {
  // M=1 (decoding), odd sizes that fit no SIMD width, and OFA-base widths.
  const Shape3 shapes[] = {{1, 1, 1},      {1, 7, 5},      {1, 768, 768},  {2, 33, 17},
                           {5, 3072, 768}, {5, 768, 3072}, {64, 130, 257}, {97, 11, 1000}};
  uint32_t seed = 1;
  for (const Shape3& s : shapes) {
    const auto x = random_vector(s.m * s.k, seed++);
    const auto w = random_vector(s.n * s.k, seed++, -0.1f, 0.1f);
    const auto b = random_vector(s.n, seed++);
    for (bool with_bias : {false, true}) {
      for (Activation act : {Activation::kNone, Activation::kRelu, Activation::kGelu}) {
        SCOPED_TRACE("m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) +
                     " k=" + std::to_string(s.k) + " bias=" + std::to_string(with_bias) +
                     " act=" + activation_name(act));
        const float* bias = with_bias ? b.data() : nullptr;
        std::vector<float> y(s.m * s.n, NAN);
        linear(x.data(), w.data(), bias, y.data(), s.m, s.n, s.k, act);
        expect_close(y, reference_linear(x, w, bias, s.m, s.n, s.k, act), 2e-5, 1e-4);
      }
    }
  }
}

TEST(KernelsLinear, CachedPrimitiveSeesNewPointersAndData) {
  const int64_t m = 3, n = 40, k = 24;
  for (uint32_t seed = 10; seed < 13; ++seed) {
    const auto x = random_vector(m * k, seed);
    const auto w = random_vector(n * k, seed + 100);
    const auto b = random_vector(n, seed + 200);
    std::vector<float> y(m * n);
    linear(x.data(), w.data(), b.data(), y.data(), m, n, k, Activation::kGelu);
    expect_close(y, reference_linear(x, w, b.data(), m, n, k, Activation::kGelu), 2e-5, 1e-4);
  }
}

TEST(KernelsLinear, OneThreadAndAllThreadsAgree) {
  const int64_t m = 64, n = 96, k = 200;
  const auto x = random_vector(m * k, 7);
  const auto w = random_vector(n * k, 8);
  const auto expected = reference_linear(x, w, nullptr, m, n, k, Activation::kNone);
  for (int threads : {1, 0}) {
    set_num_threads(threads);
    std::vector<float> y(m * n);
    linear(x.data(), w.data(), nullptr, y.data(), m, n, k);
    expect_close(y, expected, 2e-5, 1e-4);
  }
  set_num_threads(0);
}

TEST(KernelsLinear, EmptyBatchIsANoOp) {
  const auto w = random_vector(12, 3);
  EXPECT_NO_THROW(linear(nullptr, w.data(), nullptr, nullptr, 0, 4, 3));
}

TEST(KernelsPackedLinear, MatchesReferenceAcrossShapesBiasAndActivations) {
  const Shape3 shapes[] = {{1, 1, 1}, {1, 7, 5}, {4, 768, 768}, {5, 768, 3072}, {64, 130, 257}};
  uint32_t seed = 300;
  for (const Shape3& s : shapes) {
    auto x = random_vector(s.m * s.k, seed++);
    auto w = random_vector(s.n * s.k, seed++, -0.1f, 0.1f);
    auto b = random_vector(s.n, seed++);
    for (bool with_bias : {false, true}) {
      PackedLinear packed(w.data(), with_bias ? b.data() : nullptr, s.n, s.k);
      EXPECT_EQ(packed.out_features(), s.n);
      EXPECT_EQ(packed.in_features(), s.k);
      for (Activation act : {Activation::kNone, Activation::kRelu, Activation::kGelu}) {
        SCOPED_TRACE("m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) +
                     " k=" + std::to_string(s.k) + " bias=" + std::to_string(with_bias) +
                     " act=" + activation_name(act));
        std::vector<float> y(s.m * s.n, NAN);
        packed.forward(x.data(), y.data(), s.m, act);
        expect_close(y, reference_linear(x, w, with_bias ? b.data() : nullptr, s.m, s.n, s.k, act),
                     2e-5, 1e-4);
      }
    }
  }
}

TEST(KernelsPackedLinear, OwnsItsWeightsAndServesSeveralBatchSizes) {
  const int64_t n = 70, k = 45;
  auto w = random_vector(n * k, 400), b = random_vector(n, 401);
  const auto kept_w = w, kept_b = b;
  PackedLinear packed(w.data(), b.data(), n, k);
  std::fill(w.begin(), w.end(), NAN);  // the caller's buffers may be temporaries
  std::fill(b.begin(), b.end(), NAN);
  for (int64_t m : {1, 5, 3, 900, 1}) {
    SCOPED_TRACE("m=" + std::to_string(m));
    const auto x = random_vector(m * k, 402 + m);
    std::vector<float> y(m * n);
    packed.forward(x.data(), y.data(), m, Activation::kRelu);
    expect_close(y, reference_linear(x, kept_w, kept_b.data(), m, n, k, Activation::kRelu), 2e-5,
                 1e-4);
  }
}

TEST(KernelsPackedLinear, ConcurrentCallersShareOneLayerSafely) {
  // The encoder's text and image streams may run at once (spec 5.2) through the same primitives.
  const int64_t n = 256, k = 192;
  const auto w = random_vector(n * k, 500), b = random_vector(n, 501);
  const PackedLinear packed(w.data(), b.data(), n, k);
  const int64_t rows[2] = {37, 5};
  std::vector<float> x[2], y_packed[2], y_plain[2], expected[2];
  for (int t = 0; t < 2; ++t) {
    x[t] = random_vector(rows[t] * k, 502 + t);
    y_packed[t].assign(rows[t] * n, NAN);
    y_plain[t].assign(rows[t] * n, NAN);
    expected[t] = reference_linear(x[t], w, b.data(), rows[t], n, k, Activation::kGelu);
  }
  auto work = [&](int t) {
    for (int repeat = 0; repeat < 20; ++repeat) {
      packed.forward(x[t].data(), y_packed[t].data(), rows[t], Activation::kGelu);
      linear(x[t].data(), w.data(), b.data(), y_plain[t].data(), rows[t], n, k, Activation::kGelu);
    }
  };
  std::thread first(work, 0), second(work, 1);
  first.join();
  second.join();
  for (int t = 0; t < 2; ++t) {
    expect_close(y_packed[t], expected[t], 2e-5, 1e-4);
    expect_close(y_plain[t], expected[t], 2e-5, 1e-4);
  }
}

TEST(KernelsPackedLinear, EmptyMovedFromAndBadArgumentsThrowError) {
  const auto w = random_vector(6, 600);
  std::vector<float> x(6), y(4);
  PackedLinear empty;
  EXPECT_TRUE(empty.empty());
  EXPECT_THROW(empty.forward(x.data(), y.data(), 1), Error);
  PackedLinear first(w.data(), nullptr, 2, 3);
  PackedLinear second = std::move(first);
  EXPECT_THROW(first.forward(x.data(), y.data(), 1), Error);  // NOLINT(bugprone-use-after-move)
  EXPECT_NO_THROW(second.forward(x.data(), y.data(), 2));
  EXPECT_THROW(second.forward(x.data(), y.data(), -1), Error);
  EXPECT_THROW(second.forward(nullptr, y.data(), 1), Error);
  EXPECT_THROW(PackedLinear(w.data(), nullptr, 0, 3), Error);
  EXPECT_THROW(PackedLinear(nullptr, nullptr, 2, 3), Error);
}

TEST(KernelsLinear, BadArgumentsThrowError) {
  std::vector<float> x(6), w(6), y(4);
  EXPECT_THROW(linear(x.data(), w.data(), nullptr, y.data(), -1, 2, 3), Error);
  EXPECT_THROW(linear(x.data(), w.data(), nullptr, y.data(), 2, 0, 3), Error);
  EXPECT_THROW(linear(x.data(), w.data(), nullptr, y.data(), 2, 2, 0), Error);
  EXPECT_THROW(linear(nullptr, w.data(), nullptr, y.data(), 2, 2, 3), Error);
  try {
    linear(x.data(), nullptr, nullptr, y.data(), 2, 2, 3);
    FAIL() << "expected mue::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("linear"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mue::kernels
