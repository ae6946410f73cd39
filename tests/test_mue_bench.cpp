// mue-bench on a random-weight OFA-tiny model and small dumps of COCO images: the report's
// structure and invariants (full depth is the baseline with retention 1 and no expected saving,
// fixed depths save exactly their share of layers, histograms count every sample, bad samples
// are counted and never scored, the image cache is fair across settings), captioning metrics on
// references that are the model's own captions, and bad command lines. Timings are never
// asserted, only their presence.
#include <gtest/gtest.h>

#include "bench_app_test.h"
#include "mue/exit_policy.h"

namespace mue::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const json& setting_named(const json& report, const std::string& name) {
  for (const json& s : report["settings"])
    if (s["name"] == name) return s;
  static const json none;
  ADD_FAILURE() << "no setting " << name;
  return none;
}

size_t sum(const json& counts) {
  size_t total = 0;
  for (const json& c : counts) total += c.get<size_t>();
  return total;
}

class MueBenchVe : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = bench_model(&why_);
    if (model_.empty() || !app_built("mue-bench")) return;
    scratch_ = fresh_temp_dir("mue_bench_ve");
    dump_ = write_ve_dump(scratch_ / "dump");
    json policy = {{"exit_threshold_text", 0.8}, {"comment", "a policy file"}};
    std::ofstream(scratch_ / "policy.json") << policy.dump();
    // Batch 2: image 0's three queries make one chunk of two batches, image 1's two another.
    run_ = run_app("mue-bench",
                   "--dump " + shell_quote(dump_.dir.string()) + " --model " +
                       shell_quote(model_.string()) +
                       " --threads 1 --batch-size 2 --per-sample --fixed-depths"
                       " --setting mine=" +
                       shell_quote((scratch_ / "policy.json").string()) +
                       " --sweep image=0.8,0.9 --sweep text=0.8 --json " +
                       shell_quote((scratch_ / "report.json").string()) + " --svg " +
                       shell_quote((scratch_ / "plot.svg").string()),
                   scratch_);
    if (run_.exit_code == 0) report_ = read_json(scratch_ / "report.json");
  }
  static void TearDownTestSuite() {
    if (!scratch_.empty() && !::testing::UnitTest::GetInstance()->Failed())
      fs::remove_all(scratch_);
  }
  void SetUp() override {
    if (model_.empty()) GTEST_SKIP() << why_;
    ASSERT_TRUE(app_built("mue-bench"));
    ASSERT_EQ(run_.exit_code, 0) << run_.out << run_.err;
  }
  static inline fs::path model_, scratch_;
  static inline std::string why_;
  static inline VeDumpInfo dump_;
  static inline AppRun run_;
  static inline json report_;
};

TEST_F(MueBenchVe, RunsEverySettingWithFullDepthFirst) {
  std::vector<std::string> names;
  for (const json& s : report_["settings"]) names.push_back(s["name"]);
  std::vector<std::string> expected{"full_depth", "mine", "image0.8_text0.8", "image0.9_text0.8"};
  for (const char* stack : {"image", "text", "decoder"})
    for (int k = 1; k < 4; ++k)
      expected.push_back(std::string("fixed_") + stack + "_" + std::to_string(k));
  EXPECT_EQ(names, expected);
  EXPECT_EQ(report_["task"], "ve");  // inferred from the manifest
  EXPECT_EQ(report_["quality_metric"], "accuracy");
  EXPECT_EQ(report_["batch_size"], 2);
  EXPECT_EQ(report_["model"]["encoder_layers"], 4);
  EXPECT_EQ(setting_named(report_, "mine")["policy"]["exit_threshold_text"], 0.8);
  EXPECT_EQ(setting_named(report_, "image0.9_text0.8")["policy"]["exit_threshold_image"], 0.9);
  for (const std::string& name : expected) EXPECT_NE(run_.out.find(name), std::string::npos);
}

TEST_F(MueBenchVe, FullDepthIsTheBaseline) {
  const json& full = report_["settings"][0];
  EXPECT_TRUE(full["is_baseline"].get<bool>());
  EXPECT_EQ(full["quality"]["retention"], 1.0);
  EXPECT_EQ(full["agreement_with_full_depth"], 1.0);
  EXPECT_EQ(full["expected_time_reduction"], 0.0);
  EXPECT_EQ(full["time"]["measured_time_reduction"], 0.0);
  for (const char* stack : {"image", "text", "decoder"}) EXPECT_EQ(full["mean_layers"][stack], 4.0);
  EXPECT_EQ(full["exit_histograms"]["image"], json({0, 0, 0, 5}));
  // Every other setting's retention is its quality over full depth's.
  for (const json& s : report_["settings"])
    EXPECT_NEAR(s["quality"]["retention"].get<double>(),
                s["metrics"]["accuracy"].get<double>() / full["metrics"]["accuracy"].get<double>(),
                1e-12)
        << s["name"];
}

TEST_F(MueBenchVe, FixedDepthsSaveTheirShareOfLayers) {
  // Spec 1.6: 1 - (mean of the two encoder streams + decoder layers) / (4 + 4).
  for (int k = 1; k < 4; ++k) {
    const double saved = 4.0 - k;
    const json& image = setting_named(report_, "fixed_image_" + std::to_string(k));
    const json& text = setting_named(report_, "fixed_text_" + std::to_string(k));
    const json& decoder = setting_named(report_, "fixed_decoder_" + std::to_string(k));
    EXPECT_DOUBLE_EQ(image["expected_time_reduction"].get<double>(), saved / 2 / 8);
    EXPECT_DOUBLE_EQ(text["expected_time_reduction"].get<double>(), saved / 2 / 8);
    EXPECT_DOUBLE_EQ(decoder["expected_time_reduction"].get<double>(), saved / 8);
    EXPECT_GT(image["expected_time_reduction"].get<double>(), 0);
    EXPECT_EQ(image["exit_histograms"]["image"][k - 1], 5);
    EXPECT_EQ(text["exit_histograms"]["text"][k - 1], 5);
    EXPECT_EQ(decoder["exit_histograms"]["decoder"][k - 1], 5);
    EXPECT_EQ(decoder["mean_layers"]["decoder"], k);
  }
}

TEST_F(MueBenchVe, HistogramsCountEveryScoredSample) {
  for (const json& s : report_["settings"]) {
    EXPECT_EQ(s["samples"], 5) << s["name"];
    EXPECT_EQ(sum(s["exit_histograms"]["image"]), 5u) << s["name"];
    EXPECT_EQ(sum(s["exit_histograms"]["text"]), 5u) << s["name"];
    EXPECT_EQ(sum(s["exit_histograms"]["decoder"]), 5u) << s["name"];  // one pass per sample
    EXPECT_EQ(s["decoder_exits"], 5) << s["name"];
    // The histograms agree with the per-sample layers.
    std::vector<size_t> image(4, 0);
    for (const json& r : s["per_sample"]) ++image[r["layers"]["image"].get<size_t>() - 1];
    EXPECT_EQ(s["exit_histograms"]["image"], json(image)) << s["name"];
  }
}

TEST_F(MueBenchVe, AccuracyIsRecomputedFromThePredictions) {
  for (const json& s : report_["settings"]) {
    ASSERT_EQ(s["per_sample"].size(), 5u);
    size_t correct = 0, right_of_a = 0;
    for (const json& r : s["per_sample"]) {
      const std::string id = r["id"];
      ASSERT_TRUE(dump_.label_of.count(id)) << id << " was scored";
      bool right = r["prediction"] == dump_.label_of.at(id);
      EXPECT_EQ(r["correct"].get<bool>(), right);
      correct += right;
      if (id[0] == 'a') right_of_a += right;
      double p = r["probabilities"]["entailment"].get<double>() +
                 r["probabilities"]["neutral"].get<double>() +
                 r["probabilities"]["contradiction"].get<double>();
      EXPECT_NEAR(p, 1.0, 1e-6);
      EXPECT_GT(r["ms"].get<double>(), 0);
    }
    EXPECT_EQ(right_of_a, 1u) << "one query asked with all three labels";
    EXPECT_DOUBLE_EQ(s["metrics"]["accuracy"].get<double>(), correct / 5.0) << s["name"];
  }
}

TEST_F(MueBenchVe, BadSamplesAreCountedAndListed) {
  const json& d = report_["dump"];
  EXPECT_EQ(d["manifest_entries"], 9);
  EXPECT_EQ(d["scored"], 5);
  EXPECT_EQ(d["bad"], 4);
  ASSERT_EQ(d["bad_samples"].size(), 4u);
  std::vector<std::pair<int, std::string>> lines;
  for (const json& b : d["bad_samples"]) lines.emplace_back(b["line"], b["kind"]);
  EXPECT_EQ(lines,
            (std::vector<std::pair<int, std::string>>{
                {4, "bad JSON"}, {5, "missing image"}, {7, "unreadable image"}, {8, "bad text"}}));
  EXPECT_EQ(d["bad_samples"][2]["id"], "u1");
  EXPECT_NE(d["bad_samples"][2]["message"].get<std::string>().find("broken.jpg"),
            std::string::npos);
  EXPECT_NE(d["bad_samples"][3]["message"].get<std::string>().find("hypothesis is empty"),
            std::string::npos);
  EXPECT_NE(run_.err.find("4 bad samples"), std::string::npos) << run_.err;
  EXPECT_NE(run_.err.find("manifest.jsonl:5"), std::string::npos) << run_.err;
  EXPECT_EQ(d["distinct_images"], 2);
}

TEST_F(MueBenchVe, ImageReuseIsTheSameUnderEverySetting) {
  // Image 0 serves three queries and image 1 two: three of five reuse an encoding, under every
  // setting, because the cache is cleared between settings (none inherits another's entries).
  for (const json& s : report_["settings"]) {
    EXPECT_EQ(s["image_reuse"]["reused_samples"], 3) << s["name"];
    EXPECT_EQ(s["image_reuse"]["cache_hits"], 1) << s["name"];  // a3, in the second batch
  }
}

TEST_F(MueBenchVe, TimeStatisticsArePresent) {
  for (const json& s : report_["settings"]) {
    const json& t = s["time"];
    for (const char* key : {"mean_ms", "p50_ms", "p95_ms", "measured_time_reduction"})
      EXPECT_TRUE(t[key].is_number()) << s["name"] << " " << key;
    EXPECT_LE(t["p50_ms"].get<double>(), t["p95_ms"].get<double>());
    EXPECT_TRUE(t["stages_mean_ms"]["decoder"].is_number());
  }
  EXPECT_FALSE(report_["timing"].get<std::string>().empty());
}

TEST_F(MueBenchVe, WritesAnSvgPlotWithOnePointPerSetting) {
  std::string svg = read_text(scratch_ / "plot.svg");
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  size_t circles = 0;
  for (size_t at = svg.find("<circle"); at != std::string::npos; at = svg.find("<circle", at + 1))
    ++circles;
  EXPECT_EQ(circles, report_["settings"].size());
  for (const json& s : report_["settings"]) {
    std::string label = ">";
    label += s["name"].get<std::string>();
    label += '<';
    EXPECT_NE(svg.find(label), std::string::npos) << label;
  }
}

TEST_F(MueBenchVe, BatchSizeOneGivesTheSamePredictions) {
  fs::path json_path = scratch_ / "batch1.json";
  AppRun run = run_app("mue-bench",
                       "--dump " + shell_quote(dump_.dir.string()) + " --model " +
                           shell_quote(model_.string()) +
                           " --threads 1 --batch-size 1 --per-sample --sweep image=0.8,0.9"
                           " --sweep text=0.8 --no-warmup --json " +
                           shell_quote(json_path.string()),
                       scratch_);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  json one = read_json(json_path);
  for (const char* name : {"full_depth", "image0.8_text0.8", "image0.9_text0.8"}) {
    const json& a = setting_named(one, name);
    const json& b = setting_named(report_, name);
    ASSERT_EQ(a["per_sample"].size(), b["per_sample"].size());
    for (size_t i = 0; i < a["per_sample"].size(); ++i) {
      const json& x = a["per_sample"][i];
      const json& y = b["per_sample"][i];
      EXPECT_EQ(x["id"], y["id"]);
      EXPECT_EQ(x["prediction"], y["prediction"]) << name << " " << x["id"];
      EXPECT_EQ(x["layers"], y["layers"]) << name << " " << x["id"];
      EXPECT_NEAR(x["probabilities"]["neutral"].get<double>(),
                  y["probabilities"]["neutral"].get<double>(), 1e-4);
    }
    EXPECT_EQ(a["metrics"], b["metrics"]);
  }
}

TEST_F(MueBenchVe, LimitKeepsTheFirstEntriesBadOnesIncluded) {
  fs::path json_path = scratch_ / "limit.json";
  AppRun run = run_app("mue-bench",
                       "--dump " + shell_quote(dump_.dir.string()) + " --model " +
                           shell_quote(model_.string()) + " --threads 1 --limit 5 --json " +
                           shell_quote(json_path.string()),
                       scratch_);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  json r = read_json(json_path);
  EXPECT_EQ(r["dump"]["manifest_entries"], 5);
  EXPECT_EQ(r["dump"]["scored"], 3);  // a1..a3; line 4 and 5 are bad
  EXPECT_EQ(r["dump"]["bad"], 2);
  EXPECT_EQ(r["settings"].size(), 1u);
}

TEST_F(MueBenchVe, SpecsTakeThePolicyFieldsOrTheirShortForms) {
  fs::path json_path = scratch_ / "keys.json";
  AppRun run = run_app("mue-bench",
                       "--dump " + shell_quote(dump_.dir.string()) + " --model " +
                           shell_quote(model_.string()) +
                           " --threads 1 --workers 2 --per-sample --no-warmup"
                           " --setting short=text:0.8,fixed:0/0/2,kv:reference,tau:2"
                           " --setting long=exit_threshold_text:0.8,fixed_depth_decoder:2,"
                           "skipped_layer_cache:reference,calm_tau:2"
                           " --sweep exit_threshold_image=0.8 --sweep fixed_depth=0/3/0 --json " +
                           shell_quote(json_path.string()),
                       scratch_);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  json r = read_json(json_path);
  EXPECT_EQ(r["threads"], 1);
  EXPECT_EQ(r["workers"], 2);
  const json& short_form = setting_named(r, "short");
  const json& long_form = setting_named(r, "long");
  EXPECT_EQ(short_form["policy"], long_form["policy"]);
  EXPECT_EQ(long_form["policy"]["fixed_depth_decoder"], 2);
  EXPECT_EQ(long_form["policy"]["skipped_layer_cache"], "reference");
  EXPECT_EQ(short_form["mean_layers"], long_form["mean_layers"]);
  for (size_t i = 0; i < short_form["per_sample"].size(); ++i)
    EXPECT_EQ(short_form["per_sample"][i]["prediction"], long_form["per_sample"][i]["prediction"]);
  const json& swept = setting_named(r, "fixed0/3/0_image0.8");
  EXPECT_EQ(swept["policy"]["exit_threshold_image"], 0.8);
  EXPECT_EQ(swept["mean_layers"]["text"], 3.0);
  // Workers run the samples of a call: the same predictions as the calling thread.
  for (size_t i = 0; i < 5; ++i)
    EXPECT_EQ(setting_named(r, "full_depth")["per_sample"][i]["prediction"],
              setting_named(report_, "full_depth")["per_sample"][i]["prediction"]);
}

// Captioning: references that are the model's own full-depth captions make BLEU-1 exactly 1
// at full depth, an independent check that the bench scores what the engine said.
TEST(MueBenchCaption, ScoresCaptionsAndCountsTokens) {
  std::string why;
  fs::path model = bench_model(&why);
  if (model.empty()) GTEST_SKIP() << why;
  ASSERT_TRUE(app_built("mue-bench"));
  fs::path scratch = fresh_temp_dir("mue_bench_caption");
  std::vector<std::string> ids = write_caption_dump(scratch / "coco", 3);
  std::string common = " --model " + shell_quote(model.string()) +
                       " --threads 1 --beam 3 --max-len 8 --per-sample --batch-size 2";
  AppRun first = run_app("mue-bench",
                         "--dump " + shell_quote((scratch / "coco").string()) + common +
                             " --setting decoder2=fixed:0/0/2 --json " +
                             shell_quote((scratch / "first.json").string()),
                         scratch);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  json r = read_json(scratch / "first.json");
  EXPECT_EQ(r["task"], "caption");
  EXPECT_EQ(r["quality_metric"], "cider_d");
  EXPECT_EQ(r["generation"]["beam_size"], 3);
  EXPECT_EQ(r["dump"]["bad"], 2);
  EXPECT_EQ(r["dump"]["bad_samples"][0]["kind"], "missing field");
  EXPECT_EQ(r["dump"]["bad_samples"][1]["kind"], "missing image");
  for (const json& s : r["settings"]) {
    for (const char* m : {"bleu1", "bleu2", "bleu3", "bleu4", "cider_d", "rouge_l"})
      EXPECT_TRUE(s["metrics"][m].is_number()) << m;
    size_t tokens = 0;
    for (const json& x : s["per_sample"]) tokens += x["layers"]["decoder"].size();
    EXPECT_EQ(sum(s["exit_histograms"]["decoder"]), tokens) << s["name"];
    EXPECT_EQ(s["decoder_exits"], tokens);
    EXPECT_EQ(sum(s["exit_histograms"]["image"]), 3u);
    EXPECT_EQ(sum(s["exit_histograms"]["text"]), 3u);
  }
  const json& full = setting_named(r, "full_depth");
  const json& two = setting_named(r, "decoder2");
  EXPECT_EQ(full["expected_time_reduction"], 0.0);
  EXPECT_DOUBLE_EQ(two["expected_time_reduction"].get<double>(), 2.0 / 8);
  EXPECT_EQ(two["exit_histograms"]["decoder"][1], two["decoder_exits"]);

  // Second dump: each image's references are its full-depth caption (and one COCO caption).
  std::map<std::string, std::vector<std::string>> own;
  for (const json& x : full["per_sample"]) own[x["id"]] = {x["prediction"], "a photo of a thing"};
  write_caption_dump(scratch / "own", 3, own);
  AppRun second = run_app("mue-bench",
                          "--dump " + shell_quote((scratch / "own").string()) + common +
                              " --setting decoder2=fixed:0/0/2 --metric bleu1 --json " +
                              shell_quote((scratch / "second.json").string()) + " --svg " +
                              shell_quote((scratch / "plot.svg").string()),
                          scratch);
  ASSERT_EQ(second.exit_code, 0) << second.err;
  json s = read_json(scratch / "second.json");
  const json& full2 = setting_named(s, "full_depth");
  EXPECT_NEAR(full2["metrics"]["bleu1"].get<double>(), 1.0, 1e-6);
  EXPECT_GT(full2["metrics"]["cider_d"].get<double>(), 0.0);
  EXPECT_EQ(full2["quality"]["metric"], "bleu1");
  EXPECT_EQ(full2["quality"]["retention"], 1.0);
  EXPECT_EQ(full2["retention"]["cider_d"], 1.0);
  // Same model, same captions: the decoder2 setting's captions did not change either.
  for (size_t i = 0; i < 3; ++i)
    EXPECT_EQ(setting_named(s, "decoder2")["per_sample"][i]["prediction"],
              two["per_sample"][i]["prediction"]);
  EXPECT_NE(read_text(scratch / "plot.svg").find("B1 (x100)"), std::string::npos);
  if (!HasFailure()) fs::remove_all(scratch);
}

TEST(MueBenchErrors, BadCommandLinesAndInputsNameTheProblem) {
  std::string why;
  fs::path model = bench_model(&why);
  if (model.empty()) GTEST_SKIP() << why;
  ASSERT_TRUE(app_built("mue-bench"));
  fs::path scratch = fresh_temp_dir("mue_bench_errors");
  VeDumpInfo dump = write_ve_dump(scratch / "dump");
  std::string base = "--dump " + shell_quote(dump.dir.string()) + " --model " +
                     shell_quote(model.string()) + " --threads 1";
  struct Case {
    std::string args;
    int exit_code;
    std::string message;
  };
  std::ofstream(scratch / "bad_policy.json") << R"({"exit_threshold_image": 1.5})";
  fs::create_directories(scratch / "empty_dump");
  std::ofstream(scratch / "empty_dump" / "manifest.jsonl") << "\n";
  std::vector<Case> cases{
      {"--dump /nonexistent/dump", 2, "/nonexistent/dump does not exist"},
      {base + " --setting x=image:1.5", 2, "exit_threshold_image = 1.5"},
      {base + " --setting x=speed:3", 2, "unknown key \"speed\""},
      {base + " --setting x=" + shell_quote((scratch / "bad_policy.json").string()), 2,
       "bad_policy.json"},
      {base + " --setting full_depth=image:0.9", 2, "two settings are named \"full_depth\""},
      {base + " --sweep text=0.9,x", 2, "needs a number, got \"x\""},
      {base + " --sweep speed=1,2", 2, "--sweep: unknown key \"speed\""},
      {base + " --setting x=fixed:1/2", 2, "--setting x: fixed needs three numbers"},
      {base + " --setting x=exit_threshold_decoder:0", 2, "exit_threshold_decoder = 0"},
      {base + " --workers 1.5", 2, "--workers needs a whole number, got \"1.5\""},
      {base + " --batch-size 0", 2, "--batch-size must be at least 1"},
      {base + " --setting deep=fixed:0/0/99", 1,
       "setting deep: exit policy: fixed_depth_decoder = 99 exceeds"},
      {base + " --metric cider_d", 2, "not a ve metric"},
      {base + " --task caption", 1, "could be run"},  // no VE line has references
      {base + " --frobnicate", 2, "unexpected argument \"--frobnicate\""},
      {"--dump " + shell_quote((scratch / "empty_dump").string()) + " --model " +
           shell_quote(model.string()),
       2, "has no samples"},
      {"--dump " + shell_quote(dump.dir.string()) + " --model /nonexistent/model", 1,
       "/nonexistent/model"},
  };
  for (const Case& c : cases) {
    AppRun run = run_app("mue-bench", c.args, scratch);
    EXPECT_EQ(run.exit_code, c.exit_code) << c.args << "\n" << run.err;
    EXPECT_NE(run.err.find(c.message), std::string::npos) << c.args << "\n" << run.err;
  }
  AppRun help = run_app("mue-bench", "--help", scratch);
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--fixed-depths"), std::string::npos);
  if (!HasFailure()) fs::remove_all(scratch);
}

}  // namespace
}  // namespace mue::testing
