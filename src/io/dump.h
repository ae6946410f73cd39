// Bench dumps: a directory holding manifest.jsonl (one sample per line) and the images the lines
// name by relative path. bench/DUMPS.md is the format's reference; tools/build_dump.py writes
// dumps from the datasets' own files.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace mue {

enum class VeLabel { kEntailment, kNeutral, kContradiction };

// "entailment", "neutral", "contradiction": the spelling in the manifest.
const char* ve_label_name(VeLabel label);

// A visual entailment sample (spec 2.1).
struct VeSample {
  std::string id;
  std::filesystem::path image;         // the dump directory joined with the manifest's path
  std::optional<std::string> premise;  // SNLI-VE's text premise; e-SNLI-VE has none
  std::string hypothesis;
  VeLabel label;
  int line;  // 1-based line of manifest.jsonl
};

// A captioning sample (spec 2.2): the image and its human reference captions.
struct CaptionSample {
  std::string id;
  std::filesystem::path image;
  std::vector<std::string> references;
  int line;
};

// Why a manifest line was rejected; one reason per line, the first found.
enum class BadLineKind {
  kBadJson,       // not parseable as JSON
  kMissingField,  // a required field is absent
  kWrongType,     // a field (or the line itself) has the wrong JSON type
  kBadValue,      // an empty string or list, an image path absolute or outside the dump
  kUnknownLabel,  // a VE label other than the three
  kMissingImage,  // the image file does not exist (or is a broken link)
  kDuplicateId,   // an id already used by an earlier line
};

const char* bad_line_kind_name(BadLineKind kind);

struct BadLine {
  int line;
  BadLineKind kind;
  std::string message;  // "<manifest>:<line>: <reason>", as thrown in OnBadLine::kThrow mode
};

enum class OnBadLine {
  kThrow,    // the first bad line throws mue::Error with its message
  kCollect,  // bad lines are returned in Dump::bad_lines, good ones in Dump::samples
};

template <typename Sample>
struct Dump {
  std::filesystem::path manifest;
  std::vector<Sample> samples;     // in manifest order
  std::vector<BadLine> bad_lines;  // in manifest order; empty in OnBadLine::kThrow mode
};

// Read <dir>/manifest.jsonl. Blank lines are skipped, and a UTF-8 byte order mark before the first
// line; fields other than the format's are ignored. A line that is not JSON, or holds a number
// beyond double's range, is a kBadJson line. A missing or unreadable manifest, or one with no
// non-blank line ("has no samples"), throws mue::Error in either mode.
Dump<VeSample> read_ve_dump(const std::filesystem::path& dir,
                            OnBadLine on_bad_line = OnBadLine::kThrow);
Dump<CaptionSample> read_caption_dump(const std::filesystem::path& dir,
                                      OnBadLine on_bad_line = OnBadLine::kThrow);

enum class DumpTask { kVe, kCaption };

// The task of the dump in `dir`, from the first line that is a JSON object with "references"
// (captioning) or "hypothesis" (VE). Throws mue::Error when the manifest is missing, has no samples
// (the same error as the readers'), or no line tells.
DumpTask infer_dump_task(const std::filesystem::path& dir);

}  // namespace mue
