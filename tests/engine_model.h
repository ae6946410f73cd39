// A random-weight OFA-tiny-shaped model with OFA's real tokenizer, built once per test binary
// by the PyTorch reference's make_model.py (skipped without torch or ../shared/ofa-bpe).
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "python_tool.h"

namespace mue::testing {

// Returns the model directory, or an empty path with `why` set when it cannot be made.
inline std::filesystem::path random_engine_model(const std::string& name, const std::string& size,
                                                 const std::string& mode, int image_size,
                                                 std::string* why) {
  std::filesystem::path bpe = shared_bpe_dir();
  if (bpe.empty()) {
    *why = "OFA's BPE files are not under " + shared_dir().string();
    return {};
  }
  if (!torch_available()) {
    *why = "/usr/bin/python3 has no torch/numpy to make a random model";
    return {};
  }
  std::filesystem::path dir = std::filesystem::path(MUE_BINARY_DIR) / "models" / name;
  std::filesystem::create_directories(dir.parent_path());
  // ctest runs every test as its own process, in parallel: one makes the model, the others
  // wait on the lock and then find it.
  int lock_fd = ::open((dir.string() + ".lock").c_str(), O_CREAT | O_RDWR, 0644);
  if (lock_fd < 0 || ::flock(lock_fd, LOCK_EX) != 0) {
    *why = "cannot lock " + dir.string() + ".lock";
    return {};
  }
  struct Unlock {
    int fd;
    ~Unlock() {
      ::flock(fd, LOCK_UN);
      ::close(fd);
    }
  } unlock{lock_fd};
  if (!std::filesystem::exists(dir / "model.safetensors")) {
    ToolRun run = run_python_tool("make_model.py",
                                  "--size " + size + " --encoder-mode " + mode + " --image-size " +
                                      std::to_string(image_size) + " --seed 7 --out " +
                                      shell_quote(dir.string()),
                                  dir.parent_path());
    if (run.exit_code != 0) {
      *why = "make_model.py failed: " + run.output;
      return {};
    }
  }
  // Copied once, under the lock and by rename: other test processes may be reading them (a
  // rewrite in place let a CLI run read a half-written vocab.bpe).
  for (const char* f : {"encoder.json", "vocab.bpe", "dict.txt"}) {
    if (std::filesystem::exists(dir / f)) continue;
    const std::filesystem::path partial = dir / (std::string(f) + ".partial");
    std::filesystem::copy_file(bpe / f, partial, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::rename(partial, dir / f);
  }
  return dir;
}

inline std::filesystem::path coco_image(int index) {
  std::filesystem::path dir = shared_dir() / "real/coco-val2017-mini/val2017";
  std::vector<std::filesystem::path> files;
  if (std::filesystem::exists(dir))
    for (const auto& e : std::filesystem::directory_iterator(dir)) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files.empty() ? std::filesystem::path() : files[static_cast<size_t>(index) % files.size()];
}

}  // namespace mue::testing
