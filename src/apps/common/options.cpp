#include "apps/common/options.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include "mue/runtime.h"

namespace mue::apps {

std::string ArgReader::value(const std::string& flag) {
  if (done()) throw Error(flag + " needs a value");
  return next();
}

void usage_error(const std::string& tool, const std::string& message) {
  std::cerr << tool << ": " << message << "\n(" << tool << " --help for usage)\n";
  std::exit(2);
}

double parse_double(const std::string& flag, const std::string& text) {
  try {
    size_t used = 0;
    double v = std::stod(text, &used);
    if (used != text.size()) throw std::invalid_argument("trailing characters");
    return v;
  } catch (const std::exception&) {
    throw Error(flag + " needs a number, got \"" + text + "\"");
  }
}

int parse_count(const std::string& flag, const std::string& text, int min) {
  const double v = parse_double(flag, text);
  if (v != std::floor(v) || std::abs(v) > 1e6)
    throw Error(flag + " needs a whole number, got \"" + text + "\"");
  if (v < min) throw Error(flag + " must be at least " + std::to_string(min) + ", got " + text);
  return static_cast<int>(v);
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::string part;
  std::stringstream stream(text);
  while (std::getline(stream, part, separator)) parts.push_back(part);
  if (!text.empty() && text.back() == separator) parts.push_back("");
  return parts;
}

std::string short_number(double v) {
  std::ostringstream s;
  s << std::setprecision(6) << v;
  return s.str();
}

namespace {

// The default model (the three macros are set by src/apps/CMakeLists.txt for this file only):
// a binary in the build tree uses the source tree's models/; an installed one the model
// installed beside it, <bin>/../share/mue/models/NAME, found through /proc/self/exe so that
// the prefix may move and an installed binary never reads the source tree.
std::string default_model(std::string& source) {
  namespace fs = std::filesystem;
  std::error_code error;
  const fs::path exe = fs::read_symlink("/proc/self/exe", error);
  if (error)
    throw Error("cannot find this binary's directory through /proc/self/exe (" + error.message() +
                ") to find the default model (set --model or MUE_MODEL)");
  if (fs::equivalent(exe.parent_path(), MUE_BUILD_TREE_BIN_DIR, error)) {
    source = "the embedded default model";
    return MUE_DEFAULT_MODEL;
  }
  source = "the installed default model";
  return (exe.parent_path() / MUE_DEFAULT_MODEL_FROM_BIN).lexically_normal().string();
}

}  // namespace

std::string find_model(const std::optional<std::string>& model_flag) {
  std::string dir, source;
  if (model_flag) {
    dir = *model_flag, source = "--model";
  } else if (const char* env = std::getenv("MUE_MODEL"); env && *env) {
    dir = env, source = "$MUE_MODEL";
  } else {
    dir = default_model(source);
  }
  if (!std::filesystem::is_directory(dir))
    throw Error("model directory " + dir + " (from " + source +
                ") does not exist (set --model or MUE_MODEL)");
  return dir;
}

bool EngineFlags::take(const std::string& flag, ArgReader& args) {
  if (flag == "--model") {
    model = args.value(flag);
  } else if (flag == "--threads") {
    threads = parse_count(flag, args.value(flag), 0);
  } else if (flag == "--workers") {
    workers = parse_count(flag, args.value(flag), 0);
  } else if (flag == "--compute-type") {
    try {
      compute_type = parse_compute_type(args.value(flag));
    } catch (const Error& e) {
      throw Error(flag + ": " + e.what());
    }
  } else if (flag == "--beam") {
    beam = parse_count(flag, args.value(flag), 1);
  } else if (flag == "--max-len") {
    max_len = parse_count(flag, args.value(flag), 1);
  } else {
    return false;
  }
  return true;
}

EngineOptions EngineFlags::engine_options() const {
  EngineOptions options;
  options.threads = threads;
  options.workers = workers;
  options.compute_type = compute_type;
  return options;
}

GenerationSettings EngineFlags::generation(const Engine& engine) const {
  GenerationSettings g = engine.default_generation();
  if (beam) g.beam_size = beam;
  if (max_len) g.max_len = max_len;
  g.validate();
  return g;
}

}  // namespace mue::apps
