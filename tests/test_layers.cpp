// Layers built from the checkpoint's tensors: the stacked q/k/v projections.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "layers/basic.h"
#include "mue/compute_type.h"
#include "synthetic_weights.h"

namespace mue {
namespace {

constexpr int64_t kOut = 96, kIn = 80;

// The file name carries the test and the process id: ctest runs the type instances of these
// tests in parallel processes, which must not write one file.
std::string write_projections(const std::string& name, bool with_v) {
  std::vector<std::pair<std::string, Shape>> params;
  for (const char* p : {"q_proj", "k_proj", "v_proj"}) {
    if (!with_v && std::string(p) == "v_proj") continue;
    params.push_back({std::string("attn.") + p + ".weight", {kOut, kIn}});
    params.push_back({std::string("attn.") + p + ".bias", {kOut}});
  }
  const std::string path =
      ::testing::TempDir() + name + "_" + std::to_string(::getpid()) + ".safetensors";
  testing::write_synthetic_model(path, params, 7);
  return path;
}

class LinearStacked : public ::testing::TestWithParam<ComputeType> {};

// The stacked layer's rows are the separate layers' outputs side by side: the same per-row input
// (int8: the same quantisation of it) and per-output-channel weights, so int8 agrees bit for bit
// and f32/bf16 up to oneDNN's summation order.
TEST_P(LinearStacked, EqualsTheSeparateLinearsSideBySide) {
  const ComputeType type = GetParam();
  if (!compute_type_supported(type)) GTEST_SKIP() << "not supported by oneDNN on this CPU";
  const std::string path =
      write_projections(std::string("stacked_") + compute_type_name(type), true);
  WeightStore w(SafeTensorsFile::open(path));
  std::remove(path.c_str());  // the mapping stays valid
  const std::vector<std::string> parts{"attn.q_proj", "attn.k_proj", "attn.v_proj"};
  const Linear stacked = Linear::load_stacked(w, parts, kOut, kIn, type);
  ASSERT_EQ(stacked.out, 3 * kOut);
  ASSERT_EQ(stacked.in, kIn);
  w.check();
  for (int64_t rows : {1, 5, 37}) {
    std::vector<float> x(static_cast<size_t>(rows * kIn));
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i)) * 2.f;
    std::vector<float> y(static_cast<size_t>(rows * 3 * kOut));
    stacked.forward(x.data(), y.data(), rows);
    for (int64_t p = 0; p < 3; ++p) {
      const Linear single = Linear::load(w, parts[p], kOut, kIn, true, type);
      std::vector<float> expected(static_cast<size_t>(rows * kOut));
      single.forward(x.data(), expected.data(), rows);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < kOut; ++j) {
          const float got = y[r * 3 * kOut + p * kOut + j], want = expected[r * kOut + j];
          if (type == ComputeType::kInt8) {
            ASSERT_EQ(got, want) << "part " << p << " row " << r << " col " << j;
          } else {
            ASSERT_NEAR(got, want, 1e-5f * (1.f + std::fabs(want)))
                << "part " << p << " row " << r << " col " << j;
          }
        }
      }
    }
  }
}

TEST_P(LinearStacked, AMissingPartIsReportedByName) {
  const ComputeType type = GetParam();
  if (!compute_type_supported(type)) GTEST_SKIP() << "not supported by oneDNN on this CPU";
  const std::string path =
      write_projections(std::string("stacked_missing_") + compute_type_name(type), false);
  WeightStore w(SafeTensorsFile::open(path));
  std::remove(path.c_str());  // the mapping stays valid
  Linear::load_stacked(w, {"attn.q_proj", "attn.k_proj", "attn.v_proj"}, kOut, kIn, type);
  try {
    w.check();
    FAIL() << "expected an error for the missing v_proj";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("attn.v_proj.weight"), std::string::npos) << e.what();
  }
}

// A LayerNorm handed to Linear::forward must be as wide as the side it normalises.
TEST(LinearFusion, ALayerNormOfTheWrongWidthIsRefusedByName) {
  const std::vector<float> weight(4 * 3, 0.5f);
  Linear linear;
  linear.out = 4;
  linear.in = 3;
  linear.packed = std::make_shared<kernels::PackedLinear>(weight.data(), nullptr, 4, 3);
  LayerNorm wide;
  wide.dim = 5;
  wide.weight = Tensor::zeros({5});
  wide.bias = Tensor::zeros({5});
  std::vector<float> x(3, 1.f), y(4, 0.f);
  for (bool on_input : {true, false}) {
    LinearFusion fused;
    (on_input ? fused.input_norm : fused.output_norm) = &wide;
    try {
      linear.forward(x.data(), y.data(), 1, kernels::Activation::kNone, fused);
      FAIL() << "expected an error";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("LayerNorm of width 5"), std::string::npos) << what;
      EXPECT_NE(what.find(on_input ? "input of a layer 3 wide" : "output of a layer 4 wide"),
                std::string::npos)
          << what;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, LinearStacked,
                         ::testing::Values(ComputeType::kF32, ComputeType::kBF16,
                                           ComputeType::kInt8),
                         [](const auto& info) {
                           return std::string(compute_type_name(info.param));
                         });

}  // namespace
}  // namespace mue
