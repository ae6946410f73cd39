// The `mue` command-line tool (src/apps/mue.cpp) on bad input: every refusal exits with status 2
// and names the flag or file and the reason, before any result is printed.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "bench_app_test.h"

namespace mue::testing {
namespace {

namespace fs = std::filesystem;

const fs::path kModel = fs::path(MUE_SOURCE_DIR) / "models" / "mue-scenes-small";

struct BadCase {
  std::string args;     // after `mue`
  std::string message;  // expected in stderr
};

TEST(MueCli, RefusesBadInputWithTheReason) {
  ASSERT_TRUE(app_built("mue"));
  const fs::path scratch = fs::path(MUE_BINARY_DIR) / "test_mue_cli";
  fs::create_directories(scratch);
  const std::string image = shell_quote((kModel / "example.png").string());
  const std::string not_image = shell_quote((kModel / "config.json").string());
  const std::string caption = "caption " + image + " --threads 1";
  const BadCase cases[] = {
      {"caption /nonexistent/scene.png", "image /nonexistent/scene.png: cannot open"},
      {"caption " + not_image, "unknown image format"},
      {"entail " + image, "entail needs --hypothesis"},
      {caption + " --image-threshold 1.5", "exit_threshold_image = 1.5"},
      {caption + " --text-threshold 0", "exit_threshold_text = 0"},
      {caption + " --decoder-threshold high", "--decoder-threshold needs a number, got \"high\""},
      {caption + " --schedule sometimes",
       "decoder_schedule must be \"static\", \"decaying\" or \"calm\", got \"sometimes\""},
      {caption + " --fixed-depth 2,3", "--fixed-depth needs three numbers"},
      {caption + " --fixed-depth 2.5,3,3", "--fixed-depth needs a whole number, got \"2.5\""},
      {caption + " --fixed-depth 2,-1,3", "--fixed-depth must be at least 0, got -1"},
      {caption + " --fixed-depth 2,3,7",
       "fixed_depth_decoder = 7 exceeds the model's 6 decoder layers"},
      {caption + " --kv-cache sometimes",
       "skipped_layer_cache must be \"propagate\" or \"reference\", got \"sometimes\""},
      {"caption " + image + " --threads -3", "--threads must be at least 0, got -3"},
      {"caption " + image + " --threads 1.5", "--threads needs a whole number, got \"1.5\""},
      {caption + " --beam 2.5", "--beam needs a whole number, got \"2.5\""},
      {caption + " --beam 0", "--beam must be at least 1, got 0"},
      {caption + " --max-len -5", "--max-len must be at least 1, got -5"},
      {caption + " --max-len inf", "--max-len needs a whole number, got \"inf\""},
      {caption + " --model /nonexistent/model", "/nonexistent/model"},
      {caption + " --policy /nonexistent/policy.json", "/nonexistent/policy.json"},
      // Every policy field is a flag too (the exit-settings grammar of mue-bench's specs).
      {caption + " --exit-threshold-text 1.5",
       "--exit-threshold-text: exit policy: "
       "exit_threshold_text = 1.5"},
      {caption + " --calm-beta high", "--calm-beta needs a number, got \"high\""},
      {caption + " --fixed-depth-decoder 7",
       "fixed_depth_decoder = 7 exceeds the model's 6 decoder layers"},
      {caption + " --decoder-schedule sometimes", "--decoder-schedule: decoder_schedule must be"},
      {caption + " --workers -1", "--workers must be at least 0, got -1"},
      {caption + " --image-threshold", "--image-threshold needs a value"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.args);
    const AppRun run = run_app("mue", c.args, scratch);
    EXPECT_EQ(run.exit_code, 2) << run.err;
    EXPECT_NE(run.err.find(c.message), std::string::npos) << run.err;
    EXPECT_EQ(run.out, "");  // no result printed
  }
  // The counts it accepts: 0 threads is all cores, as in EngineOptions.
  const AppRun ok =
      run_app("mue", "caption " + image + " --threads 0 --beam 2 --max-len 4 --json", scratch);
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

TEST(MueCli, ExitFlagsSetThePolicyFieldsInOrder) {
  ASSERT_TRUE(app_built("mue"));
  // A scratch of its own: ctest runs the tests in parallel, and run_app writes mue.out there.
  const fs::path scratch = fs::path(MUE_BINARY_DIR) / "test_mue_cli_exit_flags";
  fs::create_directories(scratch);
  const std::string image = shell_quote((kModel / "example.png").string());
  // Short and long forms of one field, the later one winning; workers run the call.
  const AppRun run = run_app("mue",
                             "entail " + image +
                                 " --hypothesis 'there is a shirt' --threads 1 --workers 2"
                                 " --decoder-threshold 0.5 --exit-threshold-decoder 0.9"
                                 " --fixed-depth 2,0,0 --fixed-depth-text 3 --kv-cache reference"
                                 " --calm-tau 2 --json",
                             scratch);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const nlohmann::json policy = nlohmann::json::parse(run.out)["policy"];
  EXPECT_EQ(policy["exit_threshold_decoder"], 0.9);
  EXPECT_EQ(policy["fixed_depth_image"], 2);
  EXPECT_EQ(policy["fixed_depth_text"], 3);
  EXPECT_EQ(policy["fixed_depth_decoder"], 0);
  EXPECT_EQ(policy["skipped_layer_cache"], "reference");
  EXPECT_EQ(policy["calm_tau"], 2.0);
  EXPECT_EQ(nlohmann::json::parse(run.out)["exits"]["image_layers"], 2);
}

}  // namespace
}  // namespace mue::testing
