// The exit rules in the apps (issue 21), on the random-weight OFA-tiny model and small dumps:
// mue-calibrate's joint search over rules and per-layer thresholds finds a known answer and
// honours its margin; mue-bench's adaptivity report counts depths per stream, per manifest
// bucket and per right / wrong answer as the per-sample results say. Timings are never asserted.
#include <gtest/gtest.h>

#include <set>

#include "bench_app_test.h"
#include "mue/exit_policy.h"

namespace mue::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class ExitApps : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = bench_model(&why_);
    if (model_.empty()) GTEST_SKIP() << why_;
    ASSERT_TRUE(app_built("mue-calibrate"));
    ASSERT_TRUE(app_built("mue-bench"));
    scratch_ = fresh_temp_dir(std::string("exits_apps_") +
                              ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override {
    if (!scratch_.empty() && !HasFailure()) fs::remove_all(scratch_);
  }
  std::string model_arg() const { return " --model " + shell_quote(model_.string()); }
  std::string path(const std::string& name) const {
    return shell_quote((scratch_ / name).string());
  }
  fs::path model_, scratch_;
  std::string why_;
};

// A top-1 probability over VE's three answers is at least 1/3, so a confidence threshold of 0.3
// exits every pair after decoder layer 1: with any retention allowed, the expected objective must
// pick it over every cosine candidate and every encoder threshold below 1 must stay out.
TEST_F(ExitApps, CalibrationFindsTheKnownBestRule) {
  write_ve_dump(scratch_ / "dev");
  write_ve_dump(scratch_ / "test");
  AppRun run = run_app("mue-calibrate",
                       "--dev-dump " + path("dev") + " --test-dump " + path("test") + model_arg() +
                           " --threads 1 --target 0.01 --objective expected --stacks decoder"
                           " --rules cosine,confidence --grid 0.999,1 --confidence-grid 0.3,1"
                           " --per-layer decoder --rounds 1 --out " +
                           path("policy.json") + " --json " + path("report.json"),
                       scratch_);
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  ExitPolicy p = ExitPolicy::load((scratch_ / "policy.json").string());
  EXPECT_EQ(p.decoder_rule, DecoderRule::kConfidence);
  // The single threshold, or a per-layer list that exits after layer 1.
  if (p.confidence_thresholds.empty())
    EXPECT_DOUBLE_EQ(p.confidence_threshold, 0.3);
  else
    EXPECT_DOUBLE_EQ(p.confidence_thresholds.front(), 0.3);
  json report = read_json(scratch_ / "report.json");
  EXPECT_DOUBLE_EQ(report["policy"]["calibration"]["mean_layers"]["decoder"].get<double>(), 1.0);
  // The search ran the decoder's single step, then one step per layer but the last.
  std::set<json> layers;
  for (const json& e : report["search"]) layers.insert(e["layer"]);
  const int decoder_layers = report["model"]["decoder_layers"].get<int>();
  EXPECT_EQ(layers.size(), static_cast<size_t>(decoder_layers));  // null and 1..L-1
  // The dev/test gap is reported (the same dump twice: no gap in layers).
  ASSERT_TRUE(report.contains("dev_test_gap"));
  EXPECT_NEAR(report["dev_test_gap"]["expected_time_reduction"].get<double>(), 0.0, 1e-12);
}

// A margin that no candidate can meet (retention >= 1.1 on dev) keeps full depth.
TEST_F(ExitApps, CalibrationMarginRaisesTheDevTarget) {
  write_ve_dump(scratch_ / "dev");
  AppRun run = run_app("mue-calibrate",
                       "--dev-dump " + path("dev") + model_arg() +
                           " --threads 1 --target 0.5 --margin 0.45 --objective expected"
                           " --stacks decoder --rules confidence --confidence-grid 0.3,1"
                           " --rounds 1 --out " +
                           path("policy.json"),
                       scratch_);
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  json policy = read_json(scratch_ / "policy.json");
  EXPECT_DOUBLE_EQ(policy["calibration"]["dev_target_retention"].get<double>(), 0.95);
  EXPECT_DOUBLE_EQ(policy["calibration"]["margin"].get<double>(), 0.45);
  if (policy["calibration"]["retention"].get<double>() < 0.95) {
    // Then nothing was feasible: the policy is full depth.
    EXPECT_EQ(ExitPolicy::from_json(policy).to_json()["confidence_threshold"], 1.0);
  }
  for (const char* bad : {"--margin -0.1", "--margin 0.7", "--rules entropy",
                          "--confidence-grid 0,1", "--per-layer encoder"}) {
    AppRun r =
        run_app("mue-calibrate",
                "--dev-dump " + path("dev") + model_arg() + " " + bad + " --out " + path("x.json"),
                scratch_);
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_FALSE(r.err.empty()) << bad;
  }
}

TEST_F(ExitApps, AdaptivityReportCountsDepthsPerStreamBucketAndAnswer) {
  write_ve_dump(scratch_ / "dump");
  // The same samples with difficulty fields, as the scene generator writes them.
  std::vector<std::string> lines;
  const std::vector<std::tuple<std::string, std::string, std::string, std::string, int>> rows{
      {"a1", "first", "entailment", "count", 1},
      {"a2", "first", "neutral", "count", 2},
      {"a3", "first", "contradiction", "relation", 2},
      {"b1", "second", "entailment", "relation", 3},
      {"b2", "second", "contradiction", "count", 3}};
  for (const auto& [id, image, label, templ, objects] : rows)
    lines.push_back(json{
        {"id", id},
        {"image", "images/" + image + ".jpg"},
        {"hypothesis", "There is a table."},
        {"label", label},
        {"template", templ},
        {"num_objects",
         objects}}.dump());
  write_lines(scratch_ / "dump/manifest.jsonl", lines);
  AppRun run = run_app("mue-bench",
                       "--dump " + path("dump") + model_arg() +
                           " --threads 1 --setting d2=fixed:0/0/2 --setting conf=rule:confidence,"
                           "confidence:0.3 --group-by template,num_objects --per-sample --json " +
                           path("bench.json"),
                       scratch_);
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("adaptivity"), std::string::npos);
  EXPECT_NE(run.out.find("by template"), std::string::npos);
  json report = read_json(scratch_ / "bench.json");
  const json& adaptivity = report["adaptivity"];
  ASSERT_EQ(adaptivity.size(), 3u);
  const int enc = report["model"]["encoder_layers"], dec = report["model"]["decoder_layers"];
  for (size_t k = 0; k < 3; ++k) {
    const json& a = adaptivity[k];
    const json& setting = report["settings"][k];
    ASSERT_EQ(a["name"], setting["name"]);
    const int want_decoder = a["name"] == "full_depth" ? dec : a["name"] == "d2" ? 2 : 1;
    const json& d = a["streams"]["decoder"];
    EXPECT_EQ(d["count"], 5);
    EXPECT_DOUBLE_EQ(d["mean"].get<double>(), want_decoder) << a["name"];
    EXPECT_DOUBLE_EQ(d["std"].get<double>(), 0.0);
    EXPECT_EQ(d["histogram"], json({{std::to_string(want_decoder), 5}}));
    EXPECT_EQ(a["streams"]["image"]["histogram"], json({{std::to_string(enc), 5}}));
    // Buckets: template count has a1, a2, b2; num_objects 2 has a2, a3.
    EXPECT_EQ(a["groups"]["template"]["count"]["count"], 3);
    EXPECT_EQ(a["groups"]["template"]["relation"]["count"], 2);
    EXPECT_EQ(a["groups"]["num_objects"]["2"]["count"], 2);
    EXPECT_DOUBLE_EQ(a["groups"]["num_objects"]["3"]["decoder"].get<double>(), want_decoder);
    // Right and wrong answers as the per-sample predictions say.
    int right = 0;
    for (const json& s : setting["per_sample"])
      if (s["correct"].get<bool>()) ++right;
    int got = a["answers"].contains("right") ? a["answers"]["right"]["count"].get<int>() : 0;
    int wrong = a["answers"].contains("wrong") ? a["answers"]["wrong"]["count"].get<int>() : 0;
    EXPECT_EQ(got, right) << a["name"];
    EXPECT_EQ(got + wrong, 5);
    ASSERT_TRUE(a.contains("full_depth_answers"));
  }
  // Without the field in the manifest: a clear error.
  AppRun bad = run_app(
      "mue-bench", "--dump " + path("dump") + model_arg() + " --threads 1 --group-by difficulty",
      scratch_);
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("difficulty"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace mue::testing
