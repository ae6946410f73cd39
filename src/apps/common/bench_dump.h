// A dump (bench/DUMPS.md) of either task as mue-bench and mue-calibrate read it: the good samples
// in manifest order and the bad lines, so that a run can count and list what it could not score.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "io/dump.h"

namespace mue::apps {

enum class Task { kVe, kCaption };

const char* task_name(Task t);
// "ve" or "caption"; anything else is an error naming --task.
Task parse_task(const std::string& text);
// The task a manifest holds, from its first line that is a JSON object: captioning lines have
// "references", VE lines a "hypothesis" (bench/DUMPS.md).
Task infer_task(const std::filesystem::path& dump_dir);

// One manifest sample of either task.
struct Sample {
  std::string id;
  std::filesystem::path image;
  int line = 0;
  std::string premise, hypothesis;  // VE (premise may be empty)
  VeLabel label = VeLabel::kEntailment;
  std::vector<std::string> references;  // captioning
};

// A sample that no setting scores: a bad manifest line, an unreadable image, or text the model
// cannot take. Every setting excludes the same ones.
struct BadSample {
  int line = 0;
  std::string id;  // empty when the line has none that could be read
  std::string kind;
  std::string message;
  nlohmann::json to_json() const;
};

struct BenchDump {
  std::filesystem::path dir;
  Task task = Task::kVe;
  std::vector<Sample> samples;  // good lines, in manifest order
  std::vector<BadSample> bad;   // bad lines, in manifest order
  size_t manifest_entries = 0;  // samples + bad lines considered

  // "<manifest>:<line>", as the dump reader names a line.
  std::string manifest_path_line(int line) const;
};

// Reads the dump in collect mode (`task` unset: inferred). `limit` > 0 keeps the first `limit`
// manifest entries (good or bad lines alike), so a limited run reports the bad lines it met.
BenchDump load_dump(const std::filesystem::path& dir, std::optional<Task> task, size_t limit);

}  // namespace mue::apps
