// The shipped default model (models/mue-scenes-small) through the public API against the
// PyTorch reference's outputs for it (tests/fixtures/default_model, written by
// tools/make_default_model_fixtures.py from the same float16 weights): entailment
// probabilities and captions at full depth and at fixed exit depths, and the exits taken; and the
// CLI on it with the model's calibrated per-task policies.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bench_app_test.h"
#include "mue/mue.h"
#include "mue/runtime.h"

namespace mue::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kModel = fs::path(MUE_SOURCE_DIR) / "models" / "mue-scenes-small";
const fs::path kFixtures = fs::path(MUE_SOURCE_DIR) / "tests" / "fixtures" / "default_model";

class DefaultModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::ifstream in(kFixtures / "expected.json");
    if (in) expected_ = json::parse(in);
  }
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kModel / "model.safetensors")) << kModel << ": no shipped model";
    ASSERT_FALSE(expected_.is_null()) << kFixtures / "expected.json"
                                      << ": missing";
    EngineOptions opt;
    opt.threads = 2;
    engine_ = Engine::load(kModel.string(), opt);
  }
  void use_policy(const std::string& name) {
    call_.exit_policy = ExitPolicy::from_json(expected_["policies"][name]);
  }
  static inline json expected_;
  std::unique_ptr<Engine> engine_;
  CallOptions call_;  // the policy under test
};

TEST_F(DefaultModelTest, EntailmentMatchesTheReference) {
  for (const std::string policy : {"full_depth", "fixed_2_3_2"}) {
    use_policy(policy);
    for (const json& pair : expected_["ve"]) {
      SCOPED_TRACE(policy + ": " + pair["image"].get<std::string>() + " / " +
                   pair["hypothesis"].get<std::string>());
      const json& want = pair["results"][policy];
      EntailmentResult r = engine_->entail((kFixtures / pair["image"].get<std::string>()).string(),
                                           pair["premise"], pair["hypothesis"], call_);
      EXPECT_NEAR(r.p_entailment, want["p_entailment"].get<double>(), 1e-4);
      EXPECT_NEAR(r.p_neutral, want["p_neutral"].get<double>(), 1e-4);
      EXPECT_NEAR(r.p_contradiction, want["p_contradiction"].get<double>(), 1e-4);
      EXPECT_EQ(r.exits.image_layers, want["image_layers"].get<int>());
      EXPECT_EQ(r.exits.text_layers, want["text_layers"].get<int>());
      ASSERT_EQ(r.exits.decoder_layers.size(), 1u);
      EXPECT_EQ(r.exits.decoder_layers[0], want["decoder_layers"].get<int>());
    }
  }
}

TEST_F(DefaultModelTest, CaptionsMatchTheReference) {
  for (const std::string policy : {"full_depth", "fixed_2_3_2"}) {
    use_policy(policy);
    for (const json& image : expected_["caption"]) {
      SCOPED_TRACE(policy + ": " + image["image"].get<std::string>());
      const json& want = image["results"][policy];
      CaptionResult r =
          engine_->caption((kFixtures / image["image"].get<std::string>()).string(), call_);
      EXPECT_EQ(r.tokens, want["tokens"].get<std::vector<int64_t>>());
      EXPECT_EQ(r.caption, want["caption"].get<std::string>());
      EXPECT_NEAR(r.score, want["score"].get<double>(), 1e-4);
      EXPECT_EQ(r.exits.image_layers, want["image_layers"].get<int>());
      EXPECT_EQ(r.exits.text_layers, want["text_layers"].get<int>());
      EXPECT_EQ(r.exits.decoder_layers, want["decoder_layers"].get<std::vector<int>>());
    }
  }
}

// The trained model answers at least half the fixture pairs right (chance is a third): a check
// that the shipped weights are the trained ones, not a random or corrupted file.
TEST_F(DefaultModelTest, FullDepthAnswersMostPairsRight) {
  use_policy("full_depth");
  int right = 0, total = 0;
  for (const json& pair : expected_["ve"]) {
    EntailmentResult r = engine_->entail((kFixtures / pair["image"].get<std::string>()).string(),
                                         pair["premise"], pair["hypothesis"], call_);
    right += r.label_name() == pair["label"].get<std::string>();
    ++total;
  }
  EXPECT_GE(right * 2, total) << right << " of " << total << " right";  // chance: a third
}

// `mue caption` and `mue entail` take the model's calibrated policy for their task by default,
// and --policy replaces it.
TEST(DefaultModelCli, UsesTheShippedPolicyOfEachTask) {
  ASSERT_TRUE(app_built("mue"));
  const fs::path scratch = fs::path(MUE_BINARY_DIR) / "test_default_model_cli";
  fs::create_directories(scratch);
  const std::string image = shell_quote((kModel / "example.png").string());
  for (const std::string command : {"caption", "entail"}) {
    SCOPED_TRACE(command);
    const fs::path shipped = kModel / ("exit_policy." + command + ".json");
    ASSERT_TRUE(fs::exists(shipped)) << shipped;
    const std::string args = command + " " + image + " --threads 1 --json" +
                             (command == "entail" ? " --hypothesis 'there is a bag'" : "");
    AppRun run = run_app("mue", args, scratch);
    ASSERT_EQ(run.exit_code, 0) << run.err;
    json out = json::parse(run.out);
    EXPECT_EQ(out["policy_file"], shipped.string());
    EXPECT_EQ(out["policy"], ExitPolicy::load(shipped.string()).to_json());

    fs::remove(scratch / "full.json");
    AppRun full = run_app(
        "mue", args + " --policy " + shell_quote((scratch / "full.json").string()), scratch);
    EXPECT_NE(full.exit_code, 0);  // a missing policy file is refused, by name
    EXPECT_NE(full.err.find("full.json"), std::string::npos) << full.err;
    std::ofstream(scratch / "full.json") << ExitPolicy::full_depth().to_json().dump();
    full = run_app("mue", args + " --policy " + shell_quote((scratch / "full.json").string()),
                   scratch);
    ASSERT_EQ(full.exit_code, 0) << full.err;
    out = json::parse(full.out);
    EXPECT_EQ(out["exits"]["image_layers"], 6);
    EXPECT_EQ(out["exits"]["text_layers"], 6);
  }
}

// threads 0 means all cores for models of width 512 and more, one thread for narrower ones such
// as the default model (192), and the cores shared out among workers. (Not in
// test_engine_threads: its ThreadSanitizer run keeps to one OpenMP thread.)
TEST(DefaultModelThreads, TheDefaultThreadCountFollowsTheModelsWidth) {
  EngineOptions automatic;
  EXPECT_EQ(Engine::load(kModel.string(), automatic)->threads_per_call(), 1);
  EngineOptions two;
  two.threads = 2;
  EXPECT_EQ(Engine::load(kModel.string(), two)->threads_per_call(), 2);
  EngineOptions workers;
  workers.workers = 2;
  EXPECT_EQ(Engine::load(kModel.string(), workers)->threads_per_call(),
            std::max(1, hardware_threads() / 2));
}

}  // namespace
}  // namespace mue::testing
