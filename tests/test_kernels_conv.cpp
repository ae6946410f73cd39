// Conv2d and max_pool_3x3_s2 against plain NHWC loops (spec 3.3: the ResNet stem and bottleneck
// shapes), with bias, residual + ReLU, odd spatial sizes and several input shapes per object;
// the bf16 and int8 compute types against the same loops on their rounded operands.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "expect_close.h"
#include "kernels/kernels.h"
#include "kernels/quantize.h"
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

struct Geometry {
  int64_t out_c, in_c;
  int kernel, stride, padding;
};

int64_t extent(int64_t in, const Geometry& g) {
  return (in + 2 * g.padding - g.kernel) / g.stride + 1;
}

// x [n,h,w,I], weight [O,I,k,k] -> y [n,ho,wo,O] = act(conv + bias + residual).
std::vector<float> reference_conv(const std::vector<float>& x, const std::vector<float>& weight,
                                  const float* bias, const float* residual, bool relu,
                                  const Geometry& g, int64_t n, int64_t h, int64_t w) {
  const int64_t ho = extent(h, g), wo = extent(w, g);
  std::vector<float> y(n * ho * wo * g.out_c);
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t oy = 0; oy < ho; ++oy) {
      for (int64_t ox = 0; ox < wo; ++ox) {
        for (int64_t o = 0; o < g.out_c; ++o) {
          double acc = bias != nullptr ? bias[o] : 0.0;
          for (int ky = 0; ky < g.kernel; ++ky) {
            const int64_t iy = oy * g.stride - g.padding + ky;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < g.kernel; ++kx) {
              const int64_t ix = ox * g.stride - g.padding + kx;
              if (ix < 0 || ix >= w) continue;
              for (int64_t i = 0; i < g.in_c; ++i) {
                acc += double(x[((b * h + iy) * w + ix) * g.in_c + i]) *
                       weight[((o * g.in_c + i) * g.kernel + ky) * g.kernel + kx];
              }
            }
          }
          const int64_t at = ((b * ho + oy) * wo + ox) * g.out_c + o;
          if (residual != nullptr) acc += residual[at];
          if (relu) acc = std::max(acc, 0.0);
          y[at] = static_cast<float>(acc);
        }
      }
    }
  }
  return y;
}

struct ConvCase {
  const char* name;
  Geometry g;
  int64_t n, h, w;
  bool with_bias, residual, relu;
};

TEST(KernelsConv2d, MatchesReference) {
  const ConvCase cases[] = {
      {"stem 7x7 s2 p3", {16, 3, 7, 2, 3}, 1, 17, 15, true, false, true},
      {"3x3 s1 p1 residual relu", {16, 16, 3, 1, 1}, 2, 9, 11, true, true, true},
      {"3x3 s2 p1 odd", {12, 8, 3, 2, 1}, 1, 10, 7, true, false, false},
      {"1x1 s2 downsample", {32, 16, 1, 2, 0}, 1, 9, 9, true, false, false},
      {"1x1 s1 no bias", {5, 7, 1, 1, 0}, 2, 3, 4, false, false, false},
      {"3x3 64ch residual relu", {64, 64, 3, 1, 1}, 1, 13, 13, true, true, true},
      {"1x1 256->64", {64, 256, 1, 1, 0}, 1, 7, 5, true, false, true},
  };
  uint32_t seed = 1;
  for (const ConvCase& c : cases) {
    SCOPED_TRACE(c.name);
    const Geometry& g = c.g;
    const auto weight = random_vector(g.out_c * g.in_c * g.kernel * g.kernel, seed++, -0.2f, 0.2f);
    const auto bias = random_vector(g.out_c, seed++);
    const auto x = random_vector(c.n * c.h * c.w * g.in_c, seed++);
    const int64_t ho = extent(c.h, g), wo = extent(c.w, g);
    const auto residual = random_vector(c.n * ho * wo * g.out_c, seed++);
    const float* b = c.with_bias ? bias.data() : nullptr;
    const float* r = c.residual ? residual.data() : nullptr;

    Conv2d conv(weight.data(), b, g.out_c, g.in_c, g.kernel, g.stride, g.padding);
    EXPECT_EQ(conv.out_extent(c.h), ho);
    EXPECT_EQ(conv.out_extent(c.w), wo);
    EXPECT_EQ(conv.out_channels(), g.out_c);
    EXPECT_EQ(conv.in_channels(), g.in_c);
    std::vector<float> y(c.n * ho * wo * g.out_c, NAN);
    conv.forward(x.data(), c.n, c.h, c.w, y.data(), r,
                 c.relu ? Activation::kRelu : Activation::kNone);
    expect_close(y, reference_conv(x, weight, b, r, c.relu, g, c.n, c.h, c.w), 1e-5, 1e-4);
  }
}

TEST(KernelsConv2d, OwnsItsWeightsAndServesSeveralInputShapes) {
  const Geometry g{32, 16, 3, 2, 1};
  auto weight = random_vector(32 * 16 * 9, 20, -0.2f, 0.2f);
  auto bias = random_vector(32, 21);
  const auto kept_weight = weight, kept_bias = bias;
  Conv2d conv(weight.data(), bias.data(), g.out_c, g.in_c, g.kernel, g.stride, g.padding);
  // The caller's buffers may be temporaries (BatchNorm folding): clobber them.
  std::fill(weight.begin(), weight.end(), NAN);
  std::fill(bias.begin(), bias.end(), NAN);
  const int64_t shapes[][3] = {{1, 12, 12}, {2, 5, 9}, {1, 31, 3}, {1, 12, 12}};
  uint32_t seed = 22;
  for (const auto& s : shapes) {
    SCOPED_TRACE("n=" + std::to_string(s[0]) + " h=" + std::to_string(s[1]) +
                 " w=" + std::to_string(s[2]));
    const auto x = random_vector(s[0] * s[1] * s[2] * g.in_c, seed++);
    std::vector<float> y(s[0] * extent(s[1], g) * extent(s[2], g) * g.out_c);
    conv.forward(x.data(), s[0], s[1], s[2], y.data());
    expect_close(
        y, reference_conv(x, kept_weight, kept_bias.data(), nullptr, false, g, s[0], s[1], s[2]),
        1e-5, 1e-4);
  }
}

TEST(KernelsConv2d, ResidualMayAliasTheOutput) {
  const Geometry g{16, 16, 1, 1, 0};
  const auto weight = random_vector(16 * 16, 30), bias = random_vector(16, 31);
  const auto x = random_vector(6 * 5 * 16, 32);
  auto y = random_vector(6 * 5 * 16, 33);  // holds the residual on entry
  const auto expected = reference_conv(x, weight, bias.data(), y.data(), true, g, 1, 6, 5);
  Conv2d conv(weight.data(), bias.data(), g.out_c, g.in_c, g.kernel, g.stride, g.padding);
  conv.forward(x.data(), 1, 6, 5, y.data(), y.data(), Activation::kRelu);
  expect_close(y, expected, 1e-5, 1e-4);
}

TEST(KernelsConv2d, MovedConvolutionStillWorks) {
  const auto weight = random_vector(8 * 4 * 9, 40), x = random_vector(5 * 5 * 4, 41);
  Conv2d first(weight.data(), nullptr, 8, 4, 3, 1, 1);
  Conv2d second = std::move(first);
  std::vector<float> y(5 * 5 * 8);
  second.forward(x.data(), 1, 5, 5, y.data());
  expect_close(y, reference_conv(x, weight, nullptr, nullptr, false, {8, 4, 3, 1, 1}, 1, 5, 5),
               1e-5, 1e-4);
  EXPECT_THROW(first.forward(x.data(), 1, 5, 5, y.data()),
               Error);  // NOLINT(bugprone-use-after-move)
}

TEST(KernelsConv2d, BadArgumentsThrowError) {
  const std::vector<float> weight(8 * 4 * 9, 0.1f);
  EXPECT_THROW(Conv2d(weight.data(), nullptr, 0, 4, 3, 1, 1), Error);
  EXPECT_THROW(Conv2d(weight.data(), nullptr, 8, 4, 3, 0, 1), Error);
  EXPECT_THROW(Conv2d(nullptr, nullptr, 8, 4, 3, 1, 1), Error);
  const std::vector<float> weight7(8 * 4 * 7 * 7, 0.1f);  // a 7x7 kernel reads 49 taps per pair
  Conv2d conv(weight7.data(), nullptr, 8, 4, 7, 1, 0);
  std::vector<float> x(5 * 5 * 4), y(8 * 25);
  EXPECT_THROW(conv.forward(x.data(), 1, 5, 5, y.data()), Error);  // smaller than the kernel
  EXPECT_THROW(conv.forward(nullptr, 1, 9, 9, y.data()), Error);
}

std::vector<float> reference_max_pool(const std::vector<float>& x, int64_t n, int64_t h, int64_t w,
                                      int64_t c) {
  const int64_t ho = (h - 1) / 2 + 1, wo = (w - 1) / 2 + 1;
  std::vector<float> y(n * ho * wo * c);
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t oy = 0; oy < ho; ++oy) {
      for (int64_t ox = 0; ox < wo; ++ox) {
        for (int64_t ch = 0; ch < c; ++ch) {
          float m = -INFINITY;
          for (int64_t iy = 2 * oy - 1; iy <= 2 * oy + 1; ++iy) {
            for (int64_t ix = 2 * ox - 1; ix <= 2 * ox + 1; ++ix) {
              if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
              m = std::max(m, x[((b * h + iy) * w + ix) * c + ch]);
            }
          }
          y[((b * ho + oy) * wo + ox) * c + ch] = m;
        }
      }
    }
  }
  return y;
}

TEST(KernelsMaxPool, MatchesReferenceAtOddAndEvenSizes) {
  const int64_t sizes[][4] = {{1, 7, 9, 5}, {2, 8, 8, 64}, {1, 1, 1, 3}, {1, 2, 3, 17}};
  uint32_t seed = 50;
  for (const auto& s : sizes) {
    SCOPED_TRACE("n=" + std::to_string(s[0]) + " h=" + std::to_string(s[1]) +
                 " w=" + std::to_string(s[2]) + " c=" + std::to_string(s[3]));
    // All negative, so a padding tap counted as 0 would show.
    const auto x = random_vector(s[0] * s[1] * s[2] * s[3], seed++, -2.f, -1.f);
    const int64_t ho = max_pool_3x3_s2_extent(s[1]), wo = max_pool_3x3_s2_extent(s[2]);
    EXPECT_EQ(ho, (s[1] - 1) / 2 + 1);
    std::vector<float> y(s[0] * ho * wo * s[3], NAN);
    max_pool_3x3_s2(x.data(), s[0], s[1], s[2], s[3], y.data());
    expect_close(y, reference_max_pool(x, s[0], s[1], s[2], s[3]), 0, 0);
  }
  EXPECT_EQ(max_pool_3x3_s2_extent(240), 120);  // 480^2 stem output (spec 3.3)
  EXPECT_THROW(max_pool_3x3_s2_extent(0), Error);
}

std::vector<float> bf16_rounded(const std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());
  detail::to_bf16(v.data(), bits.data(), static_cast<int64_t>(v.size()));
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = detail::from_bf16(bits[i]);
  return out;
}

// bf16 rounds input and weights (nearest even) and accumulates in fp32: against the loop on the
// rounded operands only fp32 summation order differs.
TEST(KernelsConv2d, Bf16MatchesReferenceOnRoundedOperands) {
  if (!compute_type_supported(ComputeType::kBF16))
    GTEST_SKIP() << "bf16 is not supported by oneDNN on this CPU";
  const ConvCase cases[] = {
      {"stem 7x7 s2 p3", {16, 3, 7, 2, 3}, 1, 17, 15, true, false, true},
      {"3x3 s1 p1 residual relu", {16, 16, 3, 1, 1}, 2, 9, 11, true, true, true},
      {"1x1 s2 downsample", {32, 16, 1, 2, 0}, 1, 9, 9, true, false, false},
      {"1x1 256->64", {64, 256, 1, 1, 0}, 1, 7, 5, true, false, true},
  };
  uint32_t seed = 60;
  for (const ConvCase& c : cases) {
    for (ComputeType type : {ComputeType::kBF16}) {
      SCOPED_TRACE(std::string(c.name) + " " + compute_type_name(type));
      const Geometry& g = c.g;
      const auto weight =
          random_vector(g.out_c * g.in_c * g.kernel * g.kernel, seed++, -0.2f, 0.2f);
      const auto bias = random_vector(g.out_c, seed++);
      const auto x = random_vector(c.n * c.h * c.w * g.in_c, seed++);
      const int64_t ho = extent(c.h, g), wo = extent(c.w, g);
      const auto residual = random_vector(c.n * ho * wo * g.out_c, seed++);
      const float* r = c.residual ? residual.data() : nullptr;
      Conv2d conv(weight.data(), bias.data(), g.out_c, g.in_c, g.kernel, g.stride, g.padding, type);
      EXPECT_EQ(conv.compute_type(), ComputeType::kBF16);
      std::vector<float> y(c.n * ho * wo * g.out_c, NAN);
      conv.forward(x.data(), c.n, c.h, c.w, y.data(), r,
                   c.relu ? Activation::kRelu : Activation::kNone);
      expect_close(y,
                   reference_conv(bf16_rounded(x), bf16_rounded(weight), bias.data(), r, c.relu, g,
                                  c.n, c.h, c.w),
                   1e-4, 1e-3);
      EXPECT_GE(conv.weight_bytes(), size_t(weight.size() * 2 + g.out_c * 4));
    }
  }
}

// int8: s8 weights per output channel, each sample's (non-negative) input map as u8 with its own
// scale, exact s32 accumulation, fp32 scaling with bias, residual and ReLU. Against the loop on
// the dequantised operands only fp32 rounding differs; a sample's result does not depend on the
// batch it comes in; a negative input is refused by name.
TEST(KernelsConv2d, Int8MatchesReferenceOnQuantisedOperands) {
  if (!compute_type_supported(ComputeType::kInt8))
    GTEST_SKIP() << "int8 is not supported by oneDNN on this CPU";
  const ConvCase cases[] = {
      {"3x3 s1 p1 residual relu", {16, 16, 3, 1, 1}, 2, 9, 11, true, true, true},
      {"3x3 s2 p1 odd", {12, 8, 3, 2, 1}, 2, 10, 7, true, false, true},
      {"1x1 s2 downsample", {32, 16, 1, 2, 0}, 2, 9, 9, true, false, false},
      {"1x1 256->64 no bias", {64, 256, 1, 1, 0}, 2, 7, 5, false, false, true},
  };
  uint32_t seed = 90;
  for (const ConvCase& c : cases) {
    SCOPED_TRACE(c.name);
    const Geometry& g = c.g;
    const int64_t per_out = g.in_c * g.kernel * g.kernel;
    const auto weight = random_vector(g.out_c * per_out, seed++, -0.2f, 0.2f);
    const auto bias = random_vector(g.out_c, seed++);
    // Sample 1's map spans ten times sample 0's range: each needs its own scale.
    auto x = random_vector(c.n * c.h * c.w * g.in_c, seed++, 0.f, 2.f);
    const int64_t in_count = c.h * c.w * g.in_c;
    for (int64_t i = in_count; i < 2 * in_count; ++i) x[i] *= 10.f;
    const int64_t ho = extent(c.h, g), wo = extent(c.w, g), out_count = ho * wo * g.out_c;
    const auto residual = random_vector(c.n * out_count, seed++);
    const float* b = c.with_bias ? bias.data() : nullptr;
    const float* r = c.residual ? residual.data() : nullptr;
    const Activation act = c.relu ? Activation::kRelu : Activation::kNone;

    std::vector<int8_t> wq(weight.size());
    std::vector<float> w_scale(g.out_c), w_dequantised(weight.size());
    std::vector<int32_t> sums(g.out_c);
    detail::quantize_weights_s8(weight.data(), g.out_c, per_out, detail::int8_weight_max(),
                                wq.data(), w_scale.data(), sums.data());
    for (size_t i = 0; i < weight.size(); ++i) w_dequantised[i] = w_scale[i / per_out] * wq[i];
    std::vector<float> x_dequantised(x.size());
    std::vector<uint8_t> xq(in_count);
    for (int64_t s = 0; s < c.n; ++s) {
      const float x_scale =
          detail::quantize_nonnegative_u8(x.data() + s * in_count, in_count, xq.data());
      for (int64_t i = 0; i < in_count; ++i) x_dequantised[s * in_count + i] = x_scale * xq[i];
    }

    Conv2d conv(weight.data(), b, g.out_c, g.in_c, g.kernel, g.stride, g.padding,
                ComputeType::kInt8);
    EXPECT_EQ(conv.compute_type(), ComputeType::kInt8);
    EXPECT_LT(conv.weight_bytes(), weight.size() * 2);
    std::vector<float> y(c.n * out_count, NAN);
    conv.forward(x.data(), c.n, c.h, c.w, y.data(), r, act);
    expect_close(y, reference_conv(x_dequantised, w_dequantised, b, r, c.relu, g, c.n, c.h, c.w),
                 1e-4, 1e-4);
    // Against the exact fp32 convolution: within the quantisation's error (8-bit steps of each
    // sample's range; relative RMS error measured 0.4-0.5% with 8-bit weights, 0.7-0.9% with the
    // 7-bit weights of CPUs without VNNI).
    const auto exact = reference_conv(x, weight, b, r, c.relu, g, c.n, c.h, c.w);
    double err = 0, ref = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      err += (y[i] - exact[i]) * double(y[i] - exact[i]);
      ref += exact[i] * double(exact[i]);
    }
    EXPECT_LT(std::sqrt(err / ref), 0.02);
    if (r != nullptr) {  // the residual may be the output itself (filled with it)
      std::vector<float> in_place = residual;
      conv.forward(x.data(), c.n, c.h, c.w, in_place.data(), in_place.data(), act);
      EXPECT_EQ(in_place, y);
    }
    for (int64_t s = 0; s < c.n; ++s) {
      std::vector<float> alone(out_count, NAN);
      conv.forward(x.data() + s * in_count, 1, c.h, c.w, alone.data(),
                   r != nullptr ? r + s * out_count : nullptr, act);
      EXPECT_EQ(alone,
                std::vector<float>(y.begin() + s * out_count, y.begin() + (s + 1) * out_count))
          << "sample " << s;
    }
  }
  const Geometry g{8, 4, 1, 1, 0};
  const auto weight = random_vector(g.out_c * g.in_c, 99);
  Conv2d conv(weight.data(), nullptr, g.out_c, g.in_c, 1, 1, 0, ComputeType::kInt8);
  auto x = random_vector(2 * 3 * 3 * g.in_c, 98, 0.f, 1.f);
  x[3 * 3 * g.in_c + 5] = -0.5f;  // in the second sample
  std::vector<float> y(2 * 3 * 3 * g.out_c);
  try {
    conv.forward(x.data(), 2, 3, 3, y.data());
    FAIL() << "a negative input was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-negative"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("sample 1"), std::string::npos) << e.what();
  }
}

// bf16 feature maps (the ResNet's maps between a bottleneck's convolutions): a bf16 output is
// exactly the fp32 output rounded to nearest even, and a bf16 input gives exactly what the fp32
// input gives (it is rounded the same way first). f32 convolutions refuse bf16 maps.
TEST(KernelsConv2d, Bf16FeatureMapsEqualRoundingTheFp32Ones) {
  if (!compute_type_supported(ComputeType::kBF16))
    GTEST_SKIP() << "bf16 is not supported by oneDNN on this CPU";
  const Geometry g{32, 16, 3, 1, 1};
  const int64_t n = 2, h = 9, w = 7, ho = extent(h, g), wo = extent(w, g);
  const auto weight = random_vector(g.out_c * g.in_c * 9, 80, -0.2f, 0.2f);
  const auto bias = random_vector(g.out_c, 81);
  const auto x = random_vector(n * h * w * g.in_c, 82);
  Conv2d conv(weight.data(), bias.data(), g.out_c, g.in_c, g.kernel, g.stride, g.padding,
              ComputeType::kBF16);
  const size_t out_size = n * ho * wo * g.out_c;
  std::vector<float> y(out_size);
  conv.forward(x.data(), n, h, w, y.data(), nullptr, Activation::kRelu);
  std::vector<uint16_t> want(out_size), y16(out_size, 0xffff);
  detail::to_bf16(y.data(), want.data(), static_cast<int64_t>(out_size));
  conv.forward_maps(x.data(), false, n, h, w, y16.data(), true, nullptr, Activation::kRelu);
  EXPECT_EQ(y16, want);

  std::vector<uint16_t> x16(x.size());
  detail::to_bf16(x.data(), x16.data(), static_cast<int64_t>(x.size()));
  std::vector<float> from16(out_size, NAN);
  conv.forward_maps(x16.data(), true, n, h, w, from16.data(), false, nullptr, Activation::kRelu);
  EXPECT_EQ(from16, y);

  EXPECT_THROW(conv.forward_maps(x.data(), false, n, h, w, y16.data(), true, y.data()), Error);
  Conv2d f32(weight.data(), bias.data(), g.out_c, g.in_c, g.kernel, g.stride, g.padding);
  EXPECT_THROW(f32.forward_maps(x16.data(), true, n, h, w, y.data(), false), Error);
}

}  // namespace
}  // namespace mue::kernels
