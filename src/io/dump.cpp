#include "io/dump.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "mue/tensor.h"

namespace mue {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// What is wrong with one line; turned into a BadLine or a mue::Error by read_dump().
struct LineProblem {
  BadLineKind kind;
  std::string reason;
};

const json& require_field(const json& line, const char* key) {
  auto it = line.find(key);
  if (it == line.end())
    throw LineProblem{BadLineKind::kMissingField, std::string("missing field \"") + key + "\""};
  return *it;
}

std::string string_value(const json& value, const std::string& what) {
  if (!value.is_string())
    throw LineProblem{BadLineKind::kWrongType,
                      what + " must be a string, not " + value.type_name()};
  std::string text = value.get<std::string>();
  if (text.empty()) throw LineProblem{BadLineKind::kBadValue, what + " is empty"};
  return text;
}

std::string required_string(const json& line, const char* key) {
  return string_value(require_field(line, key), std::string("field \"") + key + "\"");
}

fs::path image_path(const json& line, const fs::path& dir) {
  const fs::path relative = required_string(line, "image");
  if (relative.is_absolute())
    throw LineProblem{
        BadLineKind::kBadValue,
        "field \"image\" must be a path relative to the dump, not " + relative.string()};
  // A bench reads the images of its dump, not any file a manifest from elsewhere names: a path
  // must stay inside the dump directory (a link in it is followed: build_dump.py makes them).
  const fs::path normal = relative.lexically_normal();
  if (!normal.empty() && *normal.begin() == "..")
    throw LineProblem{
        BadLineKind::kBadValue,
        "field \"image\" must stay inside the dump directory, not " + relative.string()};
  const fs::path path = dir / relative;
  std::error_code error;
  if (!fs::is_regular_file(path, error))  // follows links: a broken one is missing
    throw LineProblem{BadLineKind::kMissingImage, "image file " + path.string() + " not found"};
  return path;
}

VeLabel parse_label(const json& line) {
  const std::string label = required_string(line, "label");
  for (VeLabel known : {VeLabel::kEntailment, VeLabel::kNeutral, VeLabel::kContradiction})
    if (label == ve_label_name(known)) return known;
  throw LineProblem{BadLineKind::kUnknownLabel,
                    "unknown label \"" + label + "\" (entailment, neutral or contradiction)"};
}

VeSample parse_ve_line(const json& line, const fs::path& dir, int line_number) {
  VeSample s;
  s.id = required_string(line, "id");
  s.image = image_path(line, dir);
  if (auto it = line.find("premise"); it != line.end())
    s.premise = string_value(*it, "field \"premise\"");
  s.hypothesis = required_string(line, "hypothesis");
  s.label = parse_label(line);
  s.line = line_number;
  return s;
}

CaptionSample parse_caption_line(const json& line, const fs::path& dir, int line_number) {
  CaptionSample s;
  s.id = required_string(line, "id");
  s.image = image_path(line, dir);
  const json& references = require_field(line, "references");
  if (!references.is_array())
    throw LineProblem{
        BadLineKind::kWrongType,
        std::string("field \"references\" must be a list, not ") + references.type_name()};
  if (references.empty())
    throw LineProblem{BadLineKind::kBadValue, "field \"references\" is an empty list"};
  for (size_t i = 0; i < references.size(); ++i)
    s.references.push_back(string_value(references[i], "reference " + std::to_string(i)));
  s.line = line_number;
  return s;
}

// The lines of <dir>/manifest.jsonl, one at a time, without a line end or a leading UTF-8 byte
// order mark (editors on Windows write one).
class ManifestLines {
 public:
  explicit ManifestLines(const fs::path& dir)
      : dir_(dir), path_(dir / "manifest.jsonl"), in_(path_) {
    if (!in_) throw Error("dump " + dir_.string() + ": cannot open " + path_.string());
  }
  const fs::path& path() const { return path_; }
  int number() const { return number_; }

  // The next non-blank line, or false at the end of the file.
  bool next(std::string& text) {
    while (std::getline(in_, text)) {
      if (++number_ == 1 && text.starts_with("\xEF\xBB\xBF")) text.erase(0, 3);
      if (!text.empty() && text.back() == '\r') text.pop_back();
      if (text.find_first_not_of(" \t") == std::string::npos) continue;
      ++nonblank_;
      return true;
    }
    if (in_.bad()) throw Error("dump " + dir_.string() + ": error reading " + path_.string());
    return false;
  }
  // A manifest without a sample is an error whatever the task: said here, before anyone guesses
  // the task from its lines.
  void require_samples() const {
    if (nonblank_ == 0)
      throw Error("dump " + dir_.string() + ": " + path_.string() +
                  " has no samples (no non-blank line)");
  }

 private:
  fs::path dir_, path_;
  std::ifstream in_;
  int number_ = 0, nonblank_ = 0;
};

template <typename Sample, typename ParseLine>
Dump<Sample> read_dump(const fs::path& dir, OnBadLine on_bad_line, ParseLine parse_line) {
  ManifestLines lines(dir);
  Dump<Sample> dump;
  dump.manifest = lines.path();
  std::unordered_map<std::string, int> line_of_id;
  std::string text;
  while (lines.next(text)) {
    const int line_number = lines.number();
    try {
      json line;
      try {
        line = json::parse(text);
      } catch (const json::exception& e) {  // also out_of_range: a number beyond double (1e999)
        throw LineProblem{BadLineKind::kBadJson, std::string("not valid JSON: ") + e.what()};
      }
      if (!line.is_object())
        throw LineProblem{BadLineKind::kWrongType,
                          std::string("a line must be a JSON object, not ") + line.type_name()};
      Sample sample;
      try {
        sample = parse_line(line, dir, line_number);
      } catch (const json::exception& e) {  // no nlohmann error may escape a line
        throw LineProblem{BadLineKind::kWrongType,
                          std::string("cannot read the line: ") + e.what()};
      }
      auto [it, inserted] = line_of_id.try_emplace(sample.id, line_number);
      if (!inserted)
        throw LineProblem{
            BadLineKind::kDuplicateId,
            "id \"" + sample.id + "\" is already used on line " + std::to_string(it->second)};
      dump.samples.push_back(std::move(sample));
    } catch (const LineProblem& problem) {
      std::string message =
          dump.manifest.string() + ":" + std::to_string(line_number) + ": " + problem.reason;
      if (on_bad_line == OnBadLine::kThrow) throw Error(message);
      dump.bad_lines.push_back({line_number, problem.kind, std::move(message)});
    }
  }
  lines.require_samples();
  return dump;
}

}  // namespace

const char* ve_label_name(VeLabel label) {
  switch (label) {
    case VeLabel::kEntailment:
      return "entailment";
    case VeLabel::kNeutral:
      return "neutral";
    case VeLabel::kContradiction:
      return "contradiction";
  }
  return "?";
}

const char* bad_line_kind_name(BadLineKind kind) {
  switch (kind) {
    case BadLineKind::kBadJson:
      return "bad JSON";
    case BadLineKind::kMissingField:
      return "missing field";
    case BadLineKind::kWrongType:
      return "wrong type";
    case BadLineKind::kBadValue:
      return "bad value";
    case BadLineKind::kUnknownLabel:
      return "unknown label";
    case BadLineKind::kMissingImage:
      return "missing image";
    case BadLineKind::kDuplicateId:
      return "duplicate id";
  }
  return "?";
}

DumpTask infer_dump_task(const fs::path& dir) {
  ManifestLines lines(dir);
  std::string text;
  while (lines.next(text)) {
    const json line = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!line.is_object()) continue;
    if (line.contains("references")) return DumpTask::kCaption;
    if (line.contains("hypothesis")) return DumpTask::kVe;
  }
  lines.require_samples();
  throw Error("dump " + dir.string() + ": cannot tell the task from " + lines.path().string() +
              " (no line with \"references\" or \"hypothesis\")");
}

Dump<VeSample> read_ve_dump(const fs::path& dir, OnBadLine on_bad_line) {
  return read_dump<VeSample>(dir, on_bad_line, parse_ve_line);
}

Dump<CaptionSample> read_caption_dump(const fs::path& dir, OnBadLine on_bad_line) {
  return read_dump<CaptionSample>(dir, on_bad_line, parse_caption_line);
}

}  // namespace mue
