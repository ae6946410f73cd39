// Scoring bench runs against full depth and reporting them: quality metrics, per-setting
// summaries and the dump summary as JSON (fields in bench/README.md), the readable table, and
// writing JSON files. Quality values are kept as the metrics give them (accuracy in [0, 1],
// CIDEr-D on the toolkit's x10 scale); the table and the plot show them x100.
#pragma once

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "apps/common/bench_dump.h"
#include "apps/common/runner.h"
#include "mue/config.h"

namespace mue::apps {

// The metrics a task reports, its default quality metric, and a check of --metric.
const std::vector<std::string>& quality_metric_names(Task task);
std::string default_quality_metric(Task task);
void check_quality_metric(Task task, const std::string& metric);

// The metrics of one setting over the scored samples, by name.
std::map<std::string, double> quality_metrics(const BenchDump& dump, const RunResult& result,
                                              const SettingRun& run);

struct SummaryOptions {
  std::string quality_metric;
  bool per_sample = false;
};

// One JSON object per setting, in the order run (see bench/README.md for the fields).
nlohmann::json summarize_settings(const BenchDump& dump, const RunResult& result,
                                  const ModelConfig& config, const SummaryOptions& options);

// The parts of a report both apps share: the dump, its samples and the bad ones.
nlohmann::json dump_summary(const BenchDump& dump, const RunResult& result);
// "3 bad samples (2 missing image, 1 bad JSON)" and one line each, on stderr.
void report_bad_samples(const nlohmann::json& dump_json, const std::string& tool);
nlohmann::json model_summary(const std::string& dir, const ModelConfig& c);

inline constexpr const char* kTimingNote =
    "per-sample wall clock = the engine call for a batch (Engine::caption / Engine::entail, "
    "steady clock) divided by the batch size; image decoding and resizing (prepare_image) run "
    "once per image before the settings and are excluded; the first batch ran once untimed "
    "under every setting; settings are interleaved per chunk of whole images with rotating "
    "order; the image cache is cleared before each setting's pass over a chunk";

// `v` with `digits` decimals; a ratio as a percentage, "n/a" when it is not a number.
std::string fixed(double v, int digits);
std::string percent_or_na(const nlohmann::json& v, int digits = 1);
// A metric's column label ("CIDEr-D" for cider_d).
std::string metric_label(const std::string& metric);

// The readable table: one row per setting, then the exit-layer histograms.
void print_table(std::ostream& out, const nlohmann::json& settings, Task task,
                 const std::string& quality_metric);

void write_json(const std::filesystem::path& path, const nlohmann::json& j);

}  // namespace mue::apps
