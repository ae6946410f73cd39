// mue-bench and mue-calibrate sharded over two MPI ranks (mpirun -np 2 on loopback) report what
// one process reports: the same scored and bad samples, quality, exit histograms, per-sample
// predictions and exit layers, and the same calibrated policy. Timings are never compared.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "bench_app_test.h"
#include "mue/exit_policy.h"

namespace mue::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path default_model() { return fs::path(MUE_SOURCE_DIR) / "models/mue-scenes-small"; }

// Where this test can run: an MPI build with mpirun on the PATH.
std::string why_not_runnable() {
#ifndef MUE_TEST_MPI
  return "built without MPI (MUE_MPI=OFF or OpenMPI not found)";
#else
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0) return "mpirun is not installed";
  return "";
#endif
}

// Runs an app under `mpirun -np 2` (oversubscribed: the machine may have fewer cores; as root
// where the test runs as root), stdout and stderr apart.
AppRun run_mpi(const std::string& app, const std::string& quoted_args, const fs::path& scratch) {
  const fs::path out = scratch / (app + ".mpi.out"), err = scratch / (app + ".mpi.err");
  const std::string command =
      "mpirun -np 2 --oversubscribe --allow-run-as-root " + shell_quote(app_path(app).string()) +
      " " + quoted_args + " > " + shell_quote(out.string()) + " 2> " + shell_quote(err.string());
  const int status = std::system(command.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_text(out), read_text(err)};
}

// A VE dump of four COCO images, two queries each, and one bad line: four chunks at batch 1,
// so both ranks run two images and the bad line must survive the merge.
void write_four_image_dump(const fs::path& dir) {
  fs::create_directories(dir / "images");
  std::vector<std::string> lines;
  const char* hypotheses[] = {"There is a person.", "Two animals are outside."};
  const char* labels[] = {"entailment", "contradiction", "neutral"};
  for (int i = 0; i < 4; ++i) {
    const std::string name = "images/" + std::to_string(i) + ".jpg";
    fs::copy_file(coco_image(i), dir / name);
    for (int q = 0; q < 2; ++q)
      lines.push_back(json{{"id", std::to_string(i) + "_" + std::to_string(q)},
                           {"image", name},
                           {"hypothesis", hypotheses[q]},
                           {"label", labels[(i + q) % 3]}}
                          .dump());
    if (i == 1) lines.push_back(R"({"id": "missing", "image": "images/none.jpg", "hypothesis": "x", "label": "neutral"})");
  }
  write_lines(dir / "manifest.jsonl", lines);
}

// The parts of a mue-bench report that do not depend on timing.
json untimed(const json& report) {
  json out = {{"dump",
               {{"scored", report["dump"]["scored"]},
                {"bad", report["dump"]["bad"]},
                {"bad_samples", report["dump"]["bad_samples"]},
                {"distinct_images", report["dump"]["distinct_images"]}}},
              {"settings", json::array()}};
  for (const json& s : report["settings"]) {
    json per_sample = json::array();
    for (json r : s["per_sample"]) {
      r.erase("ms");
      per_sample.push_back(r);
    }
    out["settings"].push_back({{"name", s["name"]},
                               {"quality", s["quality"]},
                               {"mean_layers", s["mean_layers"]},
                               {"exit_histograms", s["exit_histograms"]},
                               {"expected_time_reduction", s["expected_time_reduction"]},
                               {"cache_hits", s["image_reuse"]["cache_hits"]},
                               {"per_sample", per_sample}});
  }
  return out;
}

class MpiRuns : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = why_not_runnable();
    if (!why.empty()) GTEST_SKIP() << why;
    ASSERT_TRUE(app_built("mue-bench"));
    ASSERT_TRUE(app_built("mue-calibrate"));
    scratch_ = fresh_temp_dir("mpi_runs");
    write_four_image_dump(scratch_ / "dump");
  }
  void TearDown() override {
    if (!scratch_.empty() && !HasFailure()) fs::remove_all(scratch_);
  }
  std::string common() const {
    return "--dump " + shell_quote((scratch_ / "dump").string()) + " --model " +
           shell_quote(default_model().string()) + " --threads 1 --no-progress --per-sample";
  }
  fs::path scratch_;
};

TEST_F(MpiRuns, BenchReportEqualsTheSingleProcessRun) {
  const std::string settings =
      " --setting loose=image:0.9,text:0.9,decoder:0.5 --setting early=decoder:0.2";
  AppRun one = run_app("mue-bench",
                       common() + settings + " --json " +
                           shell_quote((scratch_ / "one.json").string()),
                       scratch_);
  ASSERT_EQ(one.exit_code, 0) << one.err;
  AppRun two = run_mpi("mue-bench",
                       common() + settings + " --json " +
                           shell_quote((scratch_ / "two.json").string()),
                       scratch_);
  ASSERT_EQ(two.exit_code, 0) << two.out << two.err;
  const json a = read_json(scratch_ / "one.json"), b = read_json(scratch_ / "two.json");
  EXPECT_EQ(b["mpi_ranks"], 2);
  EXPECT_EQ(b["dump"]["scored"], 8);
  EXPECT_EQ(b["dump"]["bad"], 1);
  EXPECT_EQ(untimed(a), untimed(b));
  // Only rank 0 prints the table.
  EXPECT_EQ(two.out.find("mue-bench:"), two.out.rfind("mue-bench:")) << two.out;
}

TEST_F(MpiRuns, CalibrationChoosesTheSingleProcessPolicy) {
  const std::string args =
      "--dev-dump " + shell_quote((scratch_ / "dump").string()) + " --model " +
      shell_quote(default_model().string()) +
      " --threads 1 --no-progress --grid 0.5,0.9,1 --rounds 1 --objective expected";
  AppRun one = run_app("mue-calibrate",
                       args + " --out " + shell_quote((scratch_ / "one.policy.json").string()),
                       scratch_);
  ASSERT_EQ(one.exit_code, 0) << one.err;
  AppRun two = run_mpi("mue-calibrate",
                       args + " --out " + shell_quote((scratch_ / "two.policy.json").string()),
                       scratch_);
  ASSERT_EQ(two.exit_code, 0) << two.out << two.err;
  const json a = read_json(scratch_ / "one.policy.json"), b = read_json(scratch_ / "two.policy.json");
  EXPECT_EQ(ExitPolicy::from_json(a).to_json(), ExitPolicy::from_json(b).to_json());
  for (const char* key : {"quality", "retention", "expected_time_reduction", "mean_layers",
                          "dev_samples"})
    EXPECT_EQ(a["calibration"][key], b["calibration"][key]) << key;
}

}  // namespace
}  // namespace mue::testing
