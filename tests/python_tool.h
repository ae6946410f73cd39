// Test helpers: scratch directories, and running the repo's Python tools (tools/*.py) with
// Debian's /usr/bin/python3.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace mue::testing {

inline constexpr const char* kPython = "/usr/bin/python3";

inline bool python_available() { return std::filesystem::exists(kPython); }

// Whether Debian's python3 has torch and numpy (the reference, model makers, converter).
inline bool torch_available() {
  static const bool available =
      python_available() &&
      std::system((std::string(kPython) + " -c 'import torch, numpy' >/dev/null 2>&1").c_str()) ==
          0;
  return available;
}

// The project's shared reference data: ../shared beside the checkout, or $MUE_SHARED_DIR.
inline std::filesystem::path shared_dir() {
  if (const char* env = std::getenv("MUE_SHARED_DIR")) return env;
  return std::filesystem::path(MUE_SOURCE_DIR) / ".." / "shared";
}

// OFA's real BPE files (encoder.json, vocab.bpe, dict.txt), or "" when they are not there.
inline std::string shared_bpe_dir() {
  std::vector<std::filesystem::path> candidates = {shared_dir() / "ofa-bpe"};
  if (const char* env = std::getenv("MUE_SHARED_DIR")) candidates.push_back(env);
  for (const auto& dir : candidates)
    if (std::filesystem::exists(dir / "encoder.json") &&
        std::filesystem::exists(dir / "vocab.bpe") && std::filesystem::exists(dir / "dict.txt"))
      return dir.lexically_normal().string();
  return "";
}

// Quotes `arg` for /bin/sh.
inline std::string shell_quote(const std::string& arg) {
  std::string quoted = "'";
  for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

struct ToolRun {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// A fresh, empty directory under the system temp dir, unique to this process and call.
inline std::filesystem::path fresh_temp_dir(const std::string& tag) {
  static std::atomic<int> counter{0};
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      ("mue_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Runs `python3 <repo>/tools/<script> <args...>` and returns its exit code and output. With
// timeout_s > 0 the tool is killed after that many seconds (exit code 124), so that a hang fails
// the test instead of stalling the suite.
inline ToolRun run_python_tool(const std::string& script, const std::string& quoted_args,
                               const std::filesystem::path& scratch_dir, int timeout_s = 0) {
  const std::filesystem::path log = scratch_dir / (script + ".log");
  const std::string limit =
      timeout_s > 0 ? "timeout -k 5 " + std::to_string(timeout_s) + " " : std::string();
  const std::string command = limit + std::string(kPython) + " " +
                              shell_quote(std::string(MUE_SOURCE_DIR) + "/tools/" + script) + " " +
                              quoted_args + " > " + shell_quote(log.string()) + " 2>&1";
  const int status = std::system(command.c_str());
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text.str()};
}

}  // namespace mue::testing
