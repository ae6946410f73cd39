// linear() against a plain double-precision loop: y = act(x w^T + b), w in PyTorch [N,K] layout.
// PackedLinear's bf16 and int8 compute types against the same loop on the operands as each type
// rounds them, and against the unrounded loop with each type's own error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "expect_close.h"
#include "kernels/kernels.h"
#include "kernels/quantize.h"
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

// The operands as the bf16 compute type sees them: rounded to bf16, nearest even.
std::vector<float> bf16_rounded(const std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());
  detail::to_bf16(v.data(), bits.data(), static_cast<int64_t>(v.size()));
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = detail::from_bf16(bits[i]);
  return out;
}

// The operands as the int8 compute type sees them: x per row in u8 with a zero point, w per
// output channel in s8, both dequantised.
std::vector<float> int8_rows(const std::vector<float>& x, int64_t m, int64_t k) {
  std::vector<uint8_t> q(m * k);
  std::vector<float> scale(m);
  std::vector<int32_t> zero_point(m);
  detail::quantize_rows_u8(x.data(), m, k, q.data(), scale.data(), zero_point.data());
  std::vector<float> out(m * k);
  for (int64_t i = 0; i < m * k; ++i)
    out[i] = scale[i / k] * float(int32_t(q[i]) - zero_point[i / k]);
  return out;
}
std::vector<float> int8_weights(const std::vector<float>& w, int64_t n, int64_t k) {
  std::vector<int8_t> q(n * k);
  std::vector<float> scale(n);
  std::vector<int32_t> row_sum(n);
  detail::quantize_weights_s8(w.data(), n, k, detail::int8_weight_max(), q.data(), scale.data(),
                              row_sum.data());
  std::vector<float> out(n * k);
  for (int64_t i = 0; i < n * k; ++i) out[i] = scale[i / k] * float(q[i]);
  return out;
}

// sqrt(mean((a - e)^2) / mean(e^2)): the error of a whole output, relative to its size.
double relative_rms_error(const std::vector<float>& actual, const std::vector<float>& expected) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    err += (double(actual[i]) - expected[i]) * (double(actual[i]) - expected[i]);
    ref += double(expected[i]) * expected[i];
  }
  return std::sqrt(err / ref);
}

// A macro, since GTEST_SKIP only returns from the function it is in.
#define SKIP_UNLESS_SUPPORTED(type)  \
  if (!compute_type_supported(type)) \
  GTEST_SKIP() << compute_type_name(type) << " is not supported by oneDNN on this CPU"

class KernelsPackedLinearTyped : public ::testing::TestWithParam<ComputeType> {};

// Each type accumulates its rounded operands exactly (int8, in s32) or in fp32 (bf16): against
// the loop on those operands only fp32 summation order and the epilogue's float scaling differ.
TEST_P(KernelsPackedLinearTyped, MatchesReferenceOnTheTypesRoundedOperands) {
  const ComputeType type = GetParam();
  SKIP_UNLESS_SUPPORTED(type);
  const Shape3 shapes[] = {{1, 1, 1},      {1, 7, 5},      {4, 768, 768},
                           {5, 768, 3072}, {64, 130, 257}, {97, 11, 1000}};
  uint32_t seed = 700;
  for (const Shape3& s : shapes) {
    const auto x = random_vector(s.m * s.k, seed++);
    const auto w = random_vector(s.n * s.k, seed++, -0.1f, 0.1f);
    const auto b = random_vector(s.n, seed++);
    const auto xr = type == ComputeType::kBF16 ? bf16_rounded(x) : int8_rows(x, s.m, s.k);
    const auto wr = type == ComputeType::kBF16 ? bf16_rounded(w) : int8_weights(w, s.n, s.k);
    for (bool with_bias : {false, true}) {
      PackedLinear packed(w.data(), with_bias ? b.data() : nullptr, s.n, s.k, type);
      EXPECT_EQ(packed.compute_type(), type);
      for (Activation act : {Activation::kNone, Activation::kRelu, Activation::kGelu}) {
        SCOPED_TRACE(std::string(compute_type_name(type)) + " m=" + std::to_string(s.m) +
                     " n=" + std::to_string(s.n) + " k=" + std::to_string(s.k) +
                     " bias=" + std::to_string(with_bias) + " act=" + activation_name(act));
        std::vector<float> y(s.m * s.n, NAN);
        packed.forward(x.data(), y.data(), s.m, act);
        expect_close(y,
                     reference_linear(xr, wr, with_bias ? b.data() : nullptr, s.m, s.n, s.k, act),
                     1e-4, 1e-3);
      }
    }
  }
}

// Against fp32 operands, on OFA-base shapes (LayerNorm'd inputs ~ U(-1, 1), weights ~ 0.1):
// measured relative RMS error bf16 0.22%, int8 0.55% (8-bit weights, VNNI/AMX) or 0.88% (7-bit
// weights without VNNI); the bounds leave 2x or more.
TEST_P(KernelsPackedLinearTyped, StaysCloseToF32) {
  const ComputeType type = GetParam();
  SKIP_UNLESS_SUPPORTED(type);
  const double bound = type == ComputeType::kBF16 ? 0.01 : 0.02;
  const Shape3 shapes[] = {{64, 768, 768}, {5, 3072, 768}, {5, 768, 3072}};
  uint32_t seed = 800;
  for (const Shape3& s : shapes) {
    SCOPED_TRACE("m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) +
                 " k=" + std::to_string(s.k));
    const auto x = random_vector(s.m * s.k, seed++);
    const auto w = random_vector(s.n * s.k, seed++, -0.1f, 0.1f);
    const auto b = random_vector(s.n, seed++, -0.1f, 0.1f);
    PackedLinear packed(w.data(), b.data(), s.n, s.k, type);
    std::vector<float> y(s.m * s.n, NAN);
    packed.forward(x.data(), y.data(), s.m);
    const double error =
        relative_rms_error(y, reference_linear(x, w, b.data(), s.m, s.n, s.k, Activation::kNone));
    std::cout << compute_type_name(type) << " m=" << s.m << " n=" << s.n << " k=" << s.k
              << ": relative RMS error " << error << "\n";
    EXPECT_LT(error, bound) << compute_type_name(type);
  }
}

TEST_P(KernelsPackedLinearTyped, HoldsFewerBytesThanF32) {
  const ComputeType type = GetParam();
  SKIP_UNLESS_SUPPORTED(type);
  const int64_t n = 768, k = 768;
  const auto w = random_vector(n * k, 900), b = random_vector(n, 901);
  const PackedLinear f32(w.data(), b.data(), n, k);
  const PackedLinear typed(w.data(), b.data(), n, k, type);
  EXPECT_GE(f32.weight_bytes(), size_t(n * k * 4));
  // bf16 half of the weights; int8 a quarter, plus fp32 scales, sums and bias per channel.
  const size_t expected = type == ComputeType::kBF16 ? n * k * 2 + n * 4 : n * k + n * 12;
  EXPECT_GE(typed.weight_bytes(), expected);
  EXPECT_LT(typed.weight_bytes(), expected + expected / 8);
}

// Each thread quantises into its own buffers: concurrent calls give the serial bits.
TEST_P(KernelsPackedLinearTyped, ConcurrentCallersGetTheSerialBits) {
  const ComputeType type = GetParam();
  SKIP_UNLESS_SUPPORTED(type);
  const int64_t n = 256, k = 192;
  const auto w = random_vector(n * k, 950), b = random_vector(n, 951);
  const PackedLinear packed(w.data(), b.data(), n, k, type);
  const int64_t rows[2] = {37, 5};
  std::vector<float> x[2], serial[2], concurrent[2];
  for (int t = 0; t < 2; ++t) {
    x[t] = random_vector(rows[t] * k, 952 + t);
    serial[t].assign(rows[t] * n, NAN);
    concurrent[t].assign(rows[t] * n, NAN);
    packed.forward(x[t].data(), serial[t].data(), rows[t], Activation::kGelu);
  }
  auto work = [&](int t) {
    for (int repeat = 0; repeat < 20; ++repeat)
      packed.forward(x[t].data(), concurrent[t].data(), rows[t], Activation::kGelu);
  };
  std::thread first(work, 0), second(work, 1);
  first.join();
  second.join();
  for (int t = 0; t < 2; ++t) EXPECT_EQ(concurrent[t], serial[t]);
}

// int8 runs tall inputs (900 rows) in row blocks, one thread each; with one thread the whole
// product is one call. Per-row scales and exact s32 sums make every row's bits independent of
// how the rows are split, so both must equal the rows computed one at a time.
TEST(KernelsPackedLinear, Int8RowBlocksGiveEachRowItsOwnBits) {
  SKIP_UNLESS_SUPPORTED(ComputeType::kInt8);
  const int64_t m = 900, n = 160, k = 96;
  const auto x = random_vector(m * k, 960), w = random_vector(n * k, 961, -0.1f, 0.1f);
  const auto b = random_vector(n, 962);
  const PackedLinear packed(w.data(), b.data(), n, k, ComputeType::kInt8);
  std::vector<float> one_at_a_time(m * n, NAN);
  for (int64_t r = 0; r < m; ++r)
    packed.forward(x.data() + r * k, one_at_a_time.data() + r * n, 1, Activation::kGelu);
  for (int threads : {1, 2, 0}) {
    SCOPED_TRACE("threads=" + std::to_string(threads));
    set_num_threads(threads);
    std::vector<float> y(m * n, NAN);
    packed.forward(x.data(), y.data(), m, Activation::kGelu);
    EXPECT_EQ(y, one_at_a_time);
  }
  set_num_threads(0);
}

// A linear layer that does its LayerNorms and residual itself (FusedRows) gives the bits of
// layer_norm(), the plain layer, layer_norm() and the add, under every type: one row (the
// decoder), a few, and the int8 row blocks; with and without affine parameters.
TEST(KernelsPackedLinear, FusedRowsGiveTheBitsOfTheSeparateSteps) {
  const int64_t n = 160, k = 96, rows = 900;
  const auto w = random_vector(n * k, 970, -0.1f, 0.1f), b = random_vector(n, 971);
  // An offset and a spread per row, so that the normalisation changes the quantised values.
  const auto x = random_vector(rows * k, 972, -3.f, 5.f), residual = random_vector(rows * n, 975);
  const auto gamma_in = random_vector(k, 973, 0.5f, 1.5f), beta_in = random_vector(k, 974);
  const auto gamma_out = random_vector(n, 976, 0.5f, 1.5f), beta_out = random_vector(n, 977);
  for (ComputeType type : {ComputeType::kF32, ComputeType::kBF16, ComputeType::kInt8}) {
    if (!compute_type_supported(type)) continue;
    const PackedLinear packed(w.data(), b.data(), n, k, type);
    for (int parts : {1, 2, 3, 7}) {  // bits: input norm, output norm, residual
      for (bool affine : {true, false}) {
        const RowLayerNorm in_norm{affine ? gamma_in.data() : nullptr,
                                   affine ? beta_in.data() : nullptr, 1e-5f};
        const RowLayerNorm out_norm{affine ? gamma_out.data() : nullptr,
                                    affine ? beta_out.data() : nullptr, 1e-6f};
        FusedRows fused;
        if (parts & 1) fused.input_norm = &in_norm;
        if (parts & 2) fused.output_norm = &out_norm;
        if (parts & 4) fused.residual = residual.data();
        for (int64_t m : {1, 5, 900}) {
          SCOPED_TRACE(std::string(compute_type_name(type)) + " m=" + std::to_string(m) +
                       " parts=" + std::to_string(parts) + (affine ? " affine" : " no affine"));
          // 64-byte aligned rows, as the engine's arena gives: Eigen's sums over a row start at
          // its first aligned element, so equal bits need equally aligned rows.
          Tensor normed = Tensor::empty({m, k}), expected_t = Tensor::empty({m, n}),
                 got_t = Tensor::empty({m, n});
          float* e = expected_t.data<float>();
          float* g = got_t.data<float>();
          std::copy(x.begin(), x.begin() + m * k, normed.data<float>());
          if (fused.input_norm) {
            layer_norm(x.data(), in_norm.gamma, in_norm.beta, normed.data<float>(), m, k,
                       in_norm.eps);
          }
          packed.forward(normed.data<float>(), e, m, Activation::kGelu);
          if (fused.output_norm)
            layer_norm(e, out_norm.gamma, out_norm.beta, e, m, n, out_norm.eps);
          if (fused.residual) {
            for (int64_t i = 0; i < m * n; ++i) e[i] += residual[i];
          }
          packed.forward(x.data(), g, m, Activation::kGelu, fused);
          EXPECT_EQ(std::vector<float>(g, g + m * n), std::vector<float>(e, e + m * n));
        }
      }
    }
  }
}

TEST(KernelsPackedLinear, ResidualThatIsTheOutputIsRefused) {
  const auto w = random_vector(12, 980);
  const PackedLinear packed(w.data(), nullptr, 4, 3);
  std::vector<float> x(3, 1.f), y(4, 0.f);
  FusedRows fused;
  fused.residual = y.data();
  try {
    packed.forward(x.data(), y.data(), 1, Activation::kNone, fused);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("residual"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(ComputeTypes, KernelsPackedLinearTyped,
                         ::testing::Values(ComputeType::kBF16, ComputeType::kInt8),
                         [](const auto& info) {
                           return std::string(compute_type_name(info.param));
                         });

TEST(KernelsPackedLinear, AutoResolvesToAConcreteSupportedType) {
  const auto w = random_vector(12, 990);
  const PackedLinear packed(w.data(), nullptr, 4, 3, ComputeType::kAuto);
  EXPECT_NE(packed.compute_type(), ComputeType::kAuto);
  EXPECT_EQ(packed.compute_type(), resolve_compute_type(ComputeType::kAuto));
  EXPECT_TRUE(compute_type_supported(packed.compute_type()));
}

// The int8 GEMM's epilogue against its formula in double, for each activation, with tails of
// every length (on CPUs with AVX512-BF16 an AVX-512 version runs, with its own erf).
TEST(KernelsQuantize, Int8EpilogueFollowsItsFormula) {
  const int64_t m = 3, n = 4096 + 70;  // two column blocks, the second with a tail
  std::mt19937 rng(1300);
  std::uniform_int_distribution<int32_t> acc_dist(-20000, 20000), sum_dist(-3000, 3000);
  std::vector<int32_t> acc(m * n), row_sum(n), zero_point = {0, 17, 255};
  for (auto& a : acc) a = acc_dist(rng);
  for (auto& r : row_sum) r = sum_dist(rng);
  const std::vector<float> x_scale = {1e-3f, 4e-4f, 2e-5f};
  const auto w_scale = random_vector(n, 1301, 1e-3f, 2e-2f), bias = random_vector(n, 1302);
  using Epilogue = detail::EpilogueActivation;
  for (Epilogue act : {Epilogue::kNone, Epilogue::kRelu, Epilogue::kGelu}) {
    for (bool with_bias : {false, true}) {
      SCOPED_TRACE("act=" + std::to_string(int(act)) + " bias=" + std::to_string(with_bias));
      std::vector<float> y(m * n, NAN);
      detail::dequantize_s32(acc.data(), m, n, x_scale.data(), zero_point.data(), w_scale.data(),
                             row_sum.data(), with_bias ? bias.data() : nullptr, act, y.data());
      double largest_error = 0;
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          double v = double(x_scale[i]) * w_scale[j] *
                         double(int64_t(acc[i * n + j]) - int64_t(zero_point[i]) * row_sum[j]) +
                     (with_bias ? bias[j] : 0.0);
          if (act == Epilogue::kRelu) v = std::max(v, 0.0);
          if (act == Epilogue::kGelu) v = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
          const double error = std::fabs(y[i * n + j] - v) / (1.0 + std::fabs(v));
          largest_error = std::max(largest_error, error);
        }
      }
      EXPECT_LT(largest_error, 1e-6);
    }
  }
}

TEST(KernelsQuantize, RowsAndWeightsRoundTripWithinHalfAStep) {
  const int64_t m = 3, k = 50;
  auto x = random_vector(m * k, 991, -2.f, 3.f);
  for (int64_t i = 0; i < k; ++i) x[2 * k + i] = 0.f;  // a zero row
  std::vector<uint8_t> q(m * k);
  std::vector<float> scale(m);
  std::vector<int32_t> zero_point(m);
  detail::quantize_rows_u8(x.data(), m, k, q.data(), scale.data(), zero_point.data());
  for (int64_t i = 0; i < m * k; ++i) {
    const int64_t r = i / k;
    EXPECT_LE(std::fabs(scale[r] * (int32_t(q[i]) - zero_point[r]) - x[i]), 0.5001 * scale[r]);
  }
  EXPECT_EQ(zero_point[2], 0);
  std::vector<int8_t> qw(m * k);
  std::vector<int32_t> row_sum(m);
  detail::quantize_weights_s8(x.data(), m, k, 127, qw.data(), scale.data(), row_sum.data());
  for (int64_t r = 0; r < m; ++r) {
    int32_t sum = 0;
    for (int64_t i = 0; i < k; ++i) {
      sum += qw[r * k + i];
      EXPECT_LE(std::fabs(scale[r] * qw[r * k + i] - x[r * k + i]), 0.5001 * scale[r]);
    }
    EXPECT_EQ(row_sum[r], sum);
  }
  // A non-negative map (the int8 convolutions' input): one scale, no zero point; large enough
  // for the parallel range pass. A zero map gets scale 1; a negative value is reported.
  auto map = random_vector(70000, 992, 0.f, 4.f);
  map[12345] = 6.f;
  std::vector<uint8_t> qm(map.size());
  const float map_scale =
      detail::quantize_nonnegative_u8(map.data(), int64_t(map.size()), qm.data());
  EXPECT_FLOAT_EQ(map_scale, 6.f / 255.f);
  EXPECT_EQ(qm[12345], 255);
  for (size_t i = 0; i < map.size(); ++i)
    ASSERT_LE(std::fabs(map_scale * qm[i] - map[i]), 0.5001 * map_scale) << i;
  std::vector<float> zeros(10, 0.f);
  EXPECT_EQ(detail::quantize_nonnegative_u8(zeros.data(), 10, qm.data()), 1.f);
  EXPECT_EQ(qm[0], 0);
  map[60000] = -0.25f;
  EXPECT_EQ(detail::quantize_nonnegative_u8(map.data(), int64_t(map.size()), qm.data()), -0.25f);

  // The CPU's own conversion (where it has AVX512-BF16) against bf16_bits: every tail length, the
  // parallel size, ties, infinities, the largest floats; with and without a scale.
  for (int64_t n : {1, 15, 16, 17, 33, 1000, 70001}) {
    SCOPED_TRACE("n=" + std::to_string(n) +
                 " native=" + std::to_string(detail::native_bf16_conversion()));
    auto v = random_vector(n, 1200 + uint32_t(n), -3e4f, 3e4f);
    const float extremes[] = {1.00390625f, -1.01171875f, INFINITY, -INFINITY, 3.4e38f, 0.f, -0.f};
    for (size_t i = 0; i < std::size(extremes) && i < v.size(); ++i)
      v[v.size() - 1 - i] = extremes[i];
    std::vector<uint16_t> got(n), got_scaled(n);
    detail::to_bf16(v.data(), got.data(), n);
    detail::to_bf16_serial(v.data(), 0.125f, got_scaled.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(got[i], detail::bf16_bits(v[i])) << "x = " << v[i];
      ASSERT_EQ(got_scaled[i], detail::bf16_bits(0.125f * v[i])) << "x = " << v[i];
    }
  }

  const float special[] = {1.f, -1.5f, 1.00390625f /* a tie: to even */, NAN};
  uint16_t bits[4];
  detail::to_bf16(special, bits, 4);
  EXPECT_EQ(detail::from_bf16(bits[0]), 1.f);
  EXPECT_EQ(detail::from_bf16(bits[1]), -1.5f);
  EXPECT_EQ(detail::from_bf16(bits[2]), 1.f);
  EXPECT_TRUE(std::isnan(detail::from_bf16(bits[3])));
}

}  // namespace
}  // namespace mue::kernels
