// Test helpers for the bench apps (mue-bench, mue-calibrate): running them, and writing small
// dumps from the COCO mini images with known bad lines.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "engine_model.h"
#include "python_tool.h"

namespace mue::testing {

struct AppRun {
  int exit_code;
  std::string out, err;
};

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

inline nlohmann::json read_json(const std::filesystem::path& path) {
  return nlohmann::json::parse(read_text(path));
}

inline std::filesystem::path app_path(const std::string& name) {
  return std::filesystem::path(MUE_BINARY_DIR) / name;
}

// Runs a binary of the build directory with already quoted arguments; stdout and stderr apart.
inline AppRun run_app(const std::string& name, const std::string& quoted_args,
                      const std::filesystem::path& scratch) {
  const std::filesystem::path out = scratch / (name + ".out"), err = scratch / (name + ".err");
  const std::string command = shell_quote(app_path(name).string()) + " " + quoted_args + " > " +
                              shell_quote(out.string()) + " 2> " + shell_quote(err.string());
  const int status = std::system(command.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_text(out), read_text(err)};
}

inline void write_lines(const std::filesystem::path& path, const std::vector<std::string>& lines) {
  std::ofstream out(path);
  for (const std::string& l : lines) out << l << "\n";
}

// The VE dump the bench tests share: two COCO images, one hypothesis asked three times with each
// label (so exactly one of the three is right under any setting and accuracy is never 0), and
// four bad samples of four kinds. Lines (1-based):
//   1-3 a1..a3  image 0, the same query, labels entailment / neutral / contradiction
//   4   bad JSON
//   5   m1      missing image
//   6   b1      image 1, with a premise
//   7   u1      an image file that is not an image
//   8   t1      a hypothesis that preprocessing leaves empty
//   9   b2      image 1
struct VeDumpInfo {
  std::filesystem::path dir;
  std::map<std::string, std::string> label_of;  // scored samples
  size_t scored = 5, bad = 4, entries = 9;
};

inline VeDumpInfo write_ve_dump(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir / "images");
  fs::copy_file(coco_image(0), dir / "images/first.jpg");
  fs::copy_file(coco_image(1), dir / "images/second.jpg");
  std::ofstream(dir / "images/broken.jpg") << "not an image";
  write_lines(
      dir / "manifest.jsonl",
      {R"({"id": "a1", "image": "images/first.jpg", "hypothesis": "There is a table.", "label": "entailment"})",
       R"({"id": "a2", "image": "images/first.jpg", "hypothesis": "There is a table.", "label": "neutral"})",
       R"({"id": "a3", "image": "images/first.jpg", "hypothesis": "There is a table.", "label": "contradiction"})",
       R"({"id": "x", "image": )",
       R"({"id": "m1", "image": "images/missing.jpg", "hypothesis": "A dog.", "label": "neutral"})",
       R"({"id": "b1", "image": "images/second.jpg", "premise": "A photo.", "hypothesis": "A person sits.", "label": "entailment"})",
       R"({"id": "u1", "image": "images/broken.jpg", "hypothesis": "A cat.", "label": "neutral"})",
       R"({"id": "t1", "image": "images/second.jpg", "hypothesis": "...", "label": "neutral"})",
       R"({"id": "b2", "image": "images/second.jpg", "hypothesis": "Two animals run.", "label": "contradiction"})"});
  VeDumpInfo info;
  info.dir = dir;
  info.label_of = {{"a1", "entailment"},
                   {"a2", "neutral"},
                   {"a3", "contradiction"},
                   {"b1", "entailment"},
                   {"b2", "contradiction"}};
  return info;
}

// A captioning dump of `count` COCO images with their COCO references, a line without
// references (line 2) and one with a missing image (line 3). `references_of` replaces the
// references of the ids it names (each id is the image's file name without extension).
inline std::vector<std::string> write_caption_dump(
    const std::filesystem::path& dir, int count,
    const std::map<std::string, std::vector<std::string>>& references_of = {}) {
  namespace fs = std::filesystem;
  fs::create_directories(dir / "images");
  nlohmann::json coco =
      read_json(shared_dir() / "real/coco-val2017-mini/captions_val2017_mini.json");
  std::map<int64_t, std::string> file_of;
  for (const auto& im : coco["images"])
    file_of[im["id"].get<int64_t>()] = im["file_name"].get<std::string>();
  std::map<std::string, std::vector<std::string>> coco_refs;  // by file name
  for (const auto& a : coco["annotations"])
    coco_refs[file_of[a["image_id"].get<int64_t>()]].push_back(a["caption"].get<std::string>());
  std::vector<std::string> lines, ids;
  for (int i = 0; i < count; ++i) {
    fs::path image = coco_image(i);
    std::string id = image.stem().string();
    if (!fs::exists(dir / "images" / image.filename()))
      fs::copy_file(image, dir / "images" / image.filename());
    auto it = references_of.find(id);
    nlohmann::json refs = it != references_of.end() ? it->second : coco_refs[image.filename()];
    lines.push_back(nlohmann::json{
        {"id", id}, {"image", "images/" + image.filename().string()}, {"references", refs}}
                        .dump());
    ids.push_back(id);
    if (i == 0) {
      lines.push_back(R"({"id": "no-refs", "image": "images/)" + image.filename().string() +
                      R"("})");
      lines.push_back(R"({"id": "gone", "image": "images/gone.jpg", "references": ["x"]})");
    }
  }
  write_lines(dir / "manifest.jsonl", lines);
  return ids;
}

// The random OFA-tiny model the engine tests use, or an empty path and a reason to skip.
inline std::filesystem::path bench_model(std::string* why) {
  std::filesystem::path dir =
      random_engine_model("tiny_decomposed_64", "tiny", "decomposed", 64, why);
  if (!dir.empty() && coco_image(1).empty()) {
    *why = "no COCO images under " + shared_dir().string();
    return {};
  }
  return dir;
}

// The apps are built by the default target; a test binary built on its own may lack them.
inline ::testing::AssertionResult app_built(const std::string& name) {
  if (std::filesystem::exists(app_path(name))) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << name << " is not built in " << MUE_BINARY_DIR << " (build its app_ target too)";
}

}  // namespace mue::testing
