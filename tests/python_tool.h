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

namespace mue::testing {

inline constexpr const char* kPython = "/usr/bin/python3";

inline bool python_available() { return std::filesystem::exists(kPython); }

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

// Runs `python3 <repo>/tools/<script> <args...>` and returns its exit code and output.
inline ToolRun run_python_tool(const std::string& script, const std::string& quoted_args,
                               const std::filesystem::path& scratch_dir) {
  const std::filesystem::path log = scratch_dir / (script + ".log");
  const std::string command = std::string(kPython) + " " +
                              shell_quote(std::string(MUE_SOURCE_DIR) + "/tools/" + script) + " " +
                              quoted_args + " > " + shell_quote(log.string()) + " 2>&1";
  const int status = std::system(command.c_str());
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text.str()};
}

}  // namespace mue::testing
