// mue-calibrate on a random-weight OFA-tiny model and small COCO dumps: the policy it writes
// loads in the library and the CLI, satisfies the retention constraint on the dev dump (checked
// again by an independent mue-bench run), is the best feasible candidate of every search step,
// and is reported on the test dump. Timings are never asserted.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "bench_app_test.h"
#include "mue/exit_policy.h"

namespace mue::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr double kTarget = 0.99;

// The policy fields of a policy JSON (without "comment" and "calibration").
json policy_fields(const json& j) { return ExitPolicy::from_json(j).to_json(); }

class MueCalibrateVe : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = bench_model(&why_);
    if (model_.empty() || !app_built("mue-calibrate") || !app_built("mue-bench")) return;
    scratch_ = fresh_temp_dir("mue_calibrate_ve");
    write_ve_dump(scratch_ / "dev");
    write_ve_dump(scratch_ / "test");
    // The expected (layer-count) objective makes the choice independent of timing noise.
    run_ = run_app("mue-calibrate",
                   "--dev-dump " + shell_quote((scratch_ / "dev").string()) + " --test-dump " +
                       shell_quote((scratch_ / "test").string()) + " --model " +
                       shell_quote(model_.string()) +
                       " --threads 1 --batch-size 2 --grid 0.8,0.9,1 --rounds 2"
                       " --objective expected --out " +
                       shell_quote((scratch_ / "policy.json").string()) + " --json " +
                       shell_quote((scratch_ / "report.json").string()),
                   scratch_);
    if (run_.exit_code == 0) {
      policy_ = read_json(scratch_ / "policy.json");
      report_ = read_json(scratch_ / "report.json");
    }
  }
  static void TearDownTestSuite() {
    if (!scratch_.empty() && !::testing::UnitTest::GetInstance()->Failed())
      fs::remove_all(scratch_);
  }
  void SetUp() override {
    if (model_.empty()) GTEST_SKIP() << why_;
    ASSERT_TRUE(app_built("mue-calibrate"));
    ASSERT_TRUE(app_built("mue-bench"));
    ASSERT_EQ(run_.exit_code, 0) << run_.out << run_.err;
  }
  static inline fs::path model_, scratch_;
  static inline std::string why_;
  static inline AppRun run_;
  static inline json policy_, report_;
};

TEST_F(MueCalibrateVe, WritesAPolicyTheLibraryLoads) {
  ExitPolicy loaded = ExitPolicy::load((scratch_ / "policy.json").string());
  EXPECT_EQ(loaded.to_json(), policy_fields(policy_));
  EXPECT_EQ(policy_fields(report_["policy"]), loaded.to_json());
  const json& c = policy_["calibration"];
  EXPECT_EQ(c["target_retention"], kTarget);
  EXPECT_EQ(c["metric"], "accuracy");
  EXPECT_EQ(c["objective"], "expected");
  EXPECT_EQ(c["dev_samples"], 5);
  for (const char* key : {"quality", "full_depth_quality", "retention", "measured_time_reduction",
                          "expected_time_reduction", "mean_ms", "full_depth_mean_ms"})
    EXPECT_TRUE(c[key].is_number()) << key;
  EXPECT_TRUE(policy_["comment"].is_string());
}

TEST_F(MueCalibrateVe, ChosenPolicyKeepsTheTargetRetentionOnDev) {
  const json& c = policy_["calibration"];
  EXPECT_GE(c["retention"].get<double>(), kTarget);
  EXPECT_DOUBLE_EQ(c["retention"].get<double>(),
                   c["quality"].get<double>() / c["full_depth_quality"].get<double>());
  // An independent run of the written file: quality does not depend on timing, so mue-bench
  // must find the same retention and layer counts.
  AppRun bench = run_app("mue-bench",
                         "--dump " + shell_quote((scratch_ / "dev").string()) + " --model " +
                             shell_quote(model_.string()) + " --threads 1 --setting cal=" +
                             shell_quote((scratch_ / "policy.json").string()) + " --json " +
                             shell_quote((scratch_ / "check.json").string()),
                         scratch_);
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  json check = read_json(scratch_ / "check.json");
  const json& cal = check["settings"][1];
  ASSERT_EQ(cal["name"], "cal");
  EXPECT_GE(cal["quality"]["retention"].get<double>(), kTarget);
  EXPECT_DOUBLE_EQ(cal["quality"]["retention"].get<double>(), c["retention"].get<double>());
  EXPECT_DOUBLE_EQ(cal["expected_time_reduction"].get<double>(),
                   c["expected_time_reduction"].get<double>());
  EXPECT_EQ(cal["mean_layers"], c["mean_layers"]);
}

TEST_F(MueCalibrateVe, EveryStepKeepsTheBestFeasibleCandidate) {
  // The search log lists each step's candidates with the step's starting policy first; what a
  // step chose is where the next one starts, and the last step's choice is the written policy.
  std::vector<std::vector<json>> steps;
  std::string last_key;
  for (const json& entry : report_["search"]) {
    std::string key = std::to_string(entry["round"].get<int>()) + entry["stack"].get<std::string>();
    if (key != last_key) steps.emplace_back();
    last_key = key;
    steps.back().push_back(entry);
    const json& retention = entry["numbers"]["retention"];
    EXPECT_EQ(entry["feasible"].get<bool>(),
              retention.is_number() && retention.get<double>() >= kTarget);
  }
  ASSERT_GE(steps.size(), 3u);  // at least one round over image, text and decoder
  EXPECT_EQ(steps[0][0]["policy"], ExitPolicy::full_depth().to_json());
  for (size_t k = 0; k < steps.size(); ++k) {
    json chosen = k + 1 < steps.size() ? steps[k + 1][0]["policy"] : policy_fields(policy_);
    const json* chosen_entry = nullptr;
    for (const json& e : steps[k])
      if (e["policy"] == chosen) chosen_entry = &e;
    ASSERT_NE(chosen_entry, nullptr) << "step " << k << " chose a policy it did not run";
    EXPECT_TRUE((*chosen_entry)["feasible"].get<bool>());
    double best = (*chosen_entry)["numbers"]["expected_time_reduction"];
    for (const json& e : steps[k]) {
      if (e["feasible"].get<bool>()) {
        EXPECT_LE(e["numbers"]["expected_time_reduction"].get<double>(), best + 1e-12)
            << "step " << k << ": " << e["name"];
      }
    }
  }
}

TEST_F(MueCalibrateVe, ReportsThePolicyOnTheTestDump) {
  const json& test = report_["test"];
  ASSERT_EQ(test["settings"].size(), 2u);
  EXPECT_EQ(test["settings"][0]["name"], "full_depth");
  EXPECT_EQ(test["settings"][1]["name"], "calibrated");
  EXPECT_EQ(test["settings"][1]["policy"], policy_fields(policy_));
  EXPECT_EQ(test["dump"]["scored"], 5);
  EXPECT_EQ(test["dump"]["bad"], 4);
  EXPECT_EQ(report_["dev"]["settings"][1]["name"], "calibrated");
  EXPECT_NE(run_.out.find("test ("), std::string::npos) << run_.out;
  EXPECT_NE(run_.out.find("chosen exit policy"), std::string::npos) << run_.out;
  EXPECT_NE(run_.err.find("4 bad samples"), std::string::npos) << run_.err;
}

TEST_F(MueCalibrateVe, TheCliRunsWithThePolicy) {
  AppRun cli = run_app("mue",
                       "entail " + shell_quote(coco_image(0).string()) +
                           " --hypothesis 'There is a table.' --threads 1 --json --model " +
                           shell_quote(model_.string()) + " --policy " +
                           shell_quote((scratch_ / "policy.json").string()),
                       scratch_);
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_NO_THROW(json::parse(cli.out));
}

TEST_F(MueCalibrateVe, MeasuredObjectiveKeepsTheConstraint) {
  AppRun run = run_app("mue-calibrate",
                       "--dev-dump " + shell_quote((scratch_ / "dev").string()) + " --model " +
                           shell_quote(model_.string()) +
                           " --threads 1 --grid 0.8,1 --rounds 1 --stacks text,image --out " +
                           shell_quote((scratch_ / "measured.json").string()),
                       scratch_);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  json p = read_json(scratch_ / "measured.json");
  EXPECT_EQ(p["calibration"]["objective"], "measured");
  EXPECT_GE(p["calibration"]["retention"].get<double>(), kTarget);
  EXPECT_EQ(p["exit_threshold_decoder"], 1.0);  // not searched
}

TEST_F(MueCalibrateVe, ZeroQualityAtFullDepthIsAnError) {
  // Labels that full depth always gets wrong: retention against 0 is undefined.
  AppRun bench = run_app("mue-bench",
                         "--dump " + shell_quote((scratch_ / "dev").string()) + " --model " +
                             shell_quote(model_.string()) + " --threads 1 --per-sample --json " +
                             shell_quote((scratch_ / "predictions.json").string()),
                         scratch_);
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  json predictions = read_json(scratch_ / "predictions.json")["settings"][0]["per_sample"];
  fs::path dir = scratch_ / "wrong";
  fs::create_directories(dir);
  fs::copy(scratch_ / "dev" / "images", dir / "images");
  // a1 and b2 have no premise: the same queries as in the dev dump, now with a wrong label.
  std::vector<std::string> lines;
  for (const json& p : predictions) {
    std::string id = p["id"];
    if (id != "a1" && id != "b2") continue;
    lines.push_back(json{{"id", id},
                         {"image", id == "a1" ? "images/first.jpg" : "images/second.jpg"},
                         {"hypothesis", id == "a1" ? "There is a table." : "Two animals run."},
                         {"label", p["prediction"] == "entailment" ? "neutral" : "entailment"}}
                        .dump());
  }
  ASSERT_EQ(lines.size(), 2u);
  write_lines(dir / "manifest.jsonl", lines);
  AppRun run = run_app("mue-calibrate",
                       "--dev-dump " + shell_quote(dir.string()) + " --model " +
                           shell_quote(model_.string()) +
                           " --threads 1 --grid 0.8,1 --rounds 1 --stacks image --out " +
                           shell_quote((scratch_ / "never.json").string()),
                       scratch_);
  EXPECT_EQ(run.exit_code, 1) << run.out << run.err;
  EXPECT_NE(run.err.find("full-depth accuracy on the dev dump is 0"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(scratch_ / "never.json"));
}

TEST_F(MueCalibrateVe, BadCommandLinesNameTheProblem) {
  std::string dev = " --dev-dump " + shell_quote((scratch_ / "dev").string());
  std::string out = " --out " + shell_quote((scratch_ / "x.json").string());
  struct Case {
    std::string args, message;
  };
  std::vector<Case> cases{
      {dev, "--out POLICY.json is required"},
      {out, "--dev-dump DIR is required"},
      {dev + out + " --grid 0,1", "threshold 0 is outside (0, 1]"},
      {dev + out + " --stacks image,vision", "unknown stack \"vision\""},
      {dev + out + " --schedules static,fast", "decoder_schedule must be"},
      {dev + out + " --objective speed", "--objective must be measured or expected"},
      {dev + out + " --metric bleu4", "not a ve metric"},
      {" --dev-dump /nonexistent/dev" + out, "/nonexistent/dev does not exist"},
  };
  for (const Case& c : cases) {
    AppRun run = run_app("mue-calibrate", c.args, scratch_);
    EXPECT_EQ(run.exit_code, 2) << c.args << "\n" << run.err;
    EXPECT_NE(run.err.find(c.message), std::string::npos) << c.args << "\n" << run.err;
  }
}

// Captioning: the decoder threshold searched with two schedules, quality = BLEU-1 against
// references that are the model's own full-depth captions (a random model scores 0 on COCO's).
TEST(MueCalibrateCaption, SearchesTheDecoderScheduleToo) {
  std::string why;
  fs::path model = bench_model(&why);
  if (model.empty()) GTEST_SKIP() << why;
  ASSERT_TRUE(app_built("mue-calibrate"));
  ASSERT_TRUE(app_built("mue-bench"));
  fs::path scratch = fresh_temp_dir("mue_calibrate_caption");
  write_caption_dump(scratch / "coco", 2);
  std::string common = " --model " + shell_quote(model.string()) +
                       " --threads 1 --beam 2 --max-len 6 --batch-size 2";
  AppRun first =
      run_app("mue-bench",
              "--dump " + shell_quote((scratch / "coco").string()) + common +
                  " --per-sample --json " + shell_quote((scratch / "first.json").string()),
              scratch);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  // The report must outlive the loop: the range refers into it.
  const json first_report = read_json(scratch / "first.json");
  std::map<std::string, std::vector<std::string>> own;
  for (const json& x : first_report["settings"][0]["per_sample"]) own[x["id"]] = {x["prediction"]};
  write_caption_dump(scratch / "own", 2, own);
  AppRun run = run_app("mue-calibrate",
                       "--dev-dump " + shell_quote((scratch / "own").string()) + common +
                           " --metric bleu1 --target 0.9 --grid 0.8,0.95,1 --rounds 1"
                           " --stacks decoder --schedules static,decaying --objective expected"
                           " --kv reference --out " +
                           shell_quote((scratch / "policy.json").string()) + " --json " +
                           shell_quote((scratch / "report.json").string()),
                       scratch);
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  json p = read_json(scratch / "policy.json");
  EXPECT_GE(p["calibration"]["retention"].get<double>(), 0.9);
  EXPECT_EQ(p["calibration"]["metric"], "bleu1");
  EXPECT_EQ(p["skipped_layer_cache"], "reference");
  json report = read_json(scratch / "report.json");
  std::set<std::string> schedules;
  for (const json& e : report["search"]) schedules.insert(e["policy"]["decoder_schedule"]);
  EXPECT_EQ(schedules, (std::set<std::string>{"static", "decaying"}));
  // 1 (current) + 3 thresholds x 2 schedules, the current one among them.
  EXPECT_EQ(report["search"].size(), 6u);
  if (!HasFailure()) fs::remove_all(scratch);
}

}  // namespace
}  // namespace mue::testing
