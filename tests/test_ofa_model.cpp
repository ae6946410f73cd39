// Parity of the C++ OFA forward pass with the PyTorch reference (tools/ofa_reference), on
// random-weight models of a tiny config and of the real shapes of every OFA size (tiny, and in
// tests/fixtures/parity_sizes medium, large and huge at a 32x32 image), both encoder modes.
#include <gtest/gtest.h>

#include <cstdlib>

#include "parity_fixture.h"
#include "python_tool.h"

namespace mue::testing {
namespace {

constexpr double kTolerance = 1e-4;  // relative to the values' scale (issue 2)

std::filesystem::path work_dir() { return std::filesystem::path(MUE_BINARY_DIR) / "parity_work"; }

TEST(OfaModelParity, CommittedFixtures) {
  auto dirs = parity_case_dirs(std::filesystem::path(MUE_SOURCE_DIR) / "tests/fixtures/parity");
  ASSERT_FALSE(dirs.empty()) << "no fixtures under tests/fixtures/parity";
  for (const auto& dir : dirs) {
    ParityCase c = load_parity_case(dir, work_dir());
    check_parity_case(c, kTolerance);
  }
}

// Medium (ResNet-101, width 512), large and huge (ResNet-152, widths 1024 and 1280, 24 encoder
// layers, head dim 80), both encoder modes; made by make_fixtures.py --sizes (about a minute of
// CPU), so the live test below does not remake them every run.
TEST(OfaModelParity, EveryOfaSize) {
  auto dirs =
      parity_case_dirs(std::filesystem::path(MUE_SOURCE_DIR) / "tests/fixtures/parity_sizes");
  ASSERT_EQ(dirs.size(), 6u) << "medium, large and huge, both encoder modes";
  for (const auto& dir : dirs) {
    SCOPED_TRACE(dir.filename().string());
    ParityCase c = load_parity_case(dir, work_dir() / "sizes");
    check_parity_case(c, kTolerance);
    // Up to 3.6 GB each (huge): gone once checked (the mapping keeps it readable until then).
    std::filesystem::remove(work_dir() / "sizes" / (c.name + ".safetensors"));
  }
}

// Regenerates the fixtures with the live PyTorch reference and checks them too, so the
// committed files cannot drift from the reference.
TEST(OfaModelParity, LiveReference) {
  if (!torch_available())
    GTEST_SKIP() << "/usr/bin/python3 has no torch/numpy; live reference not checked";
  std::filesystem::path out = std::filesystem::path(MUE_BINARY_DIR) / "live_fixtures";
  std::filesystem::remove_all(out);
  std::string cmd = "cd '" MUE_SOURCE_DIR "' && /usr/bin/python3 tools/make_fixtures.py --out '" +
                    out.string() + "' > '" + out.string() + ".log' 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "make_fixtures.py failed; see " << out << ".log";
  auto dirs = parity_case_dirs(out);
  ASSERT_FALSE(dirs.empty());
  for (const auto& dir : dirs) {
    ParityCase c = load_parity_case(dir, work_dir() / "live");
    check_parity_case(c, kTolerance);
  }
}

TEST(OfaModelLoad, MissingAndMisshapedTensorsAreNamed) {
  auto dirs = parity_case_dirs(std::filesystem::path(MUE_SOURCE_DIR) / "tests/fixtures/parity");
  ASSERT_FALSE(dirs.empty());
  ModelConfig cfg = ModelConfig::load((dirs[0] / "config.json").string());
  nlohmann::json info = read_json(dirs[0] / "case.json");
  std::vector<std::pair<std::string, Shape>> params;
  for (const auto& p : info.at("parameters")) {
    std::string name = p.at(0).get<std::string>();
    Shape shape = p.at(1).get<Shape>();
    if (name == "encoder.layers.0.fc1.bias") continue;                // missing
    if (name == "decoder.layer_norm.weight") shape = {shape[0] + 1};  // mis-shaped
    params.emplace_back(name, shape);
  }
  std::filesystem::create_directories(work_dir());
  std::string path = (work_dir() / "broken.safetensors").string();
  write_synthetic_model(path, params, 1);
  try {
    OfaModel::load(cfg, path);
    FAIL() << "loading a broken model succeeded";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("missing tensor encoder.layers.0.fc1.bias"), std::string::npos) << msg;
    EXPECT_NE(msg.find("decoder.layer_norm.weight has shape"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace mue::testing
