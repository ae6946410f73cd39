#include "apps/common/bench_dump.h"

#include <fstream>
#include <utility>

#include "mue/tensor.h"

namespace mue::apps {

namespace fs = std::filesystem;
using nlohmann::json;

const char* task_name(Task t) { return t == Task::kVe ? "ve" : "caption"; }

Task parse_task(const std::string& text) {
  if (text == "ve") return Task::kVe;
  if (text == "caption") return Task::kCaption;
  throw Error("--task must be ve or caption, got \"" + text + "\"");
}

Task infer_task(const fs::path& dump_dir) {
  try {
    return infer_dump_task(dump_dir) == DumpTask::kCaption ? Task::kCaption : Task::kVe;
  } catch (const Error& e) {
    // An empty manifest says so; one whose lines name no task can still be read with --task.
    std::string why = e.what();
    if (why.find("cannot tell the task") == std::string::npos) throw;
    throw Error(why + "; pass --task ve|caption");
  }
}

json BadSample::to_json() const {
  return {{"line", line}, {"id", id}, {"kind", kind}, {"message", message}};
}

std::string BenchDump::manifest_path_line(int line) const {
  return (dir / "manifest.jsonl").string() + ":" + std::to_string(line);
}

BenchDump load_dump(const fs::path& dir, std::optional<Task> task, size_t limit) {
  BenchDump d;
  d.dir = dir;
  d.task = task ? *task : infer_task(dir);
  std::vector<std::pair<int, Sample>> good;
  std::vector<BadLine> bad_lines;
  if (d.task == Task::kVe) {
    Dump<VeSample> ve = read_ve_dump(dir, OnBadLine::kCollect);
    for (VeSample& s : ve.samples) {
      Sample x;
      x.id = s.id;
      x.image = s.image;
      x.line = s.line;
      x.premise = s.premise.value_or("");
      x.hypothesis = s.hypothesis;
      x.label = s.label;
      good.emplace_back(s.line, std::move(x));
    }
    bad_lines = std::move(ve.bad_lines);
  } else {
    Dump<CaptionSample> cap = read_caption_dump(dir, OnBadLine::kCollect);
    for (CaptionSample& s : cap.samples) {
      Sample x;
      x.id = s.id;
      x.image = s.image;
      x.line = s.line;
      x.references = s.references;
      good.emplace_back(s.line, std::move(x));
    }
    bad_lines = std::move(cap.bad_lines);
  }
  // Merge by line number so that --limit counts entries in manifest order.
  size_t g = 0, b = 0;
  while (g < good.size() || b < bad_lines.size()) {
    if (limit > 0 && d.manifest_entries >= limit) break;
    bool take_good =
        b >= bad_lines.size() || (g < good.size() && good[g].first < bad_lines[b].line);
    if (take_good) {
      d.samples.push_back(std::move(good[g++].second));
    } else {
      const BadLine& l = bad_lines[b++];
      d.bad.push_back({l.line, "", bad_line_kind_name(l.kind), l.message});
    }
    ++d.manifest_entries;
  }
  return d;
}

}  // namespace mue::apps
