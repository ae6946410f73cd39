// Command-line plumbing the apps share: reading flags and their values, numbers and counts with
// errors that name the flag, the usage-error exit, finding the model, and the engine flags
// (--model, --threads, --workers, --compute-type, --beam, --max-len) every app takes.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "mue/mue.h"

namespace mue::apps {

// Walks argv from `first`; value() takes the argument after a flag.
class ArgReader {
 public:
  ArgReader(int argc, char** argv, int first = 1) : argc_(argc), argv_(argv), next_(first) {}
  bool done() const { return next_ >= argc_; }
  std::string next() { return argv_[next_++]; }
  // The value of `flag`, the next argument; throws mue::Error "FLAG needs a value" at the end.
  std::string value(const std::string& flag);

 private:
  int argc_;
  char** argv_;
  int next_;
};

// Prints "TOOL: MESSAGE" and a pointer to --help on stderr and exits with status 2.
[[noreturn]] void usage_error(const std::string& tool, const std::string& message);

// A number: "FLAG needs a number, got \"TEXT\"" unless all of `text` is one.
double parse_double(const std::string& flag, const std::string& text);
// A whole number >= `min` (threads, sizes, depths): a fraction or a smaller value is refused
// rather than truncated or taken as a default.
int parse_count(const std::string& flag, const std::string& text, int min);

// "a,b,,c" -> {"a", "b", "", "c"}; a trailing separator gives a trailing empty part.
std::vector<std::string> split(const std::string& text, char separator);

// "0.9" rather than "0.900000": settings are named after their values.
std::string short_number(double v);

// The model directory: `model_flag` (--model) when given, else $MUE_MODEL, else the model the
// build embeds. The one place the apps look for it. Throws mue::Error naming the directory and
// where it came from when it does not exist.
std::string find_model(const std::optional<std::string>& model_flag);

// The flags that set up the engine, the same in every app.
struct EngineFlags {
  std::optional<std::string> model;              // --model DIR
  int threads = 0;                               // --threads N, 0: all cores
  int workers = 0;                               // --workers N, 0: calls run on the calling thread
  ComputeType compute_type = ComputeType::kF32;  // --compute-type f32|bf16|int8|auto
  int beam = 0, max_len = 0;                     // --beam N, --max-len N; 0: the model's

  // Takes `flag` (and its value from `args`) if it is one of the engine flags.
  bool take(const std::string& flag, ArgReader& args);
  EngineOptions engine_options() const;
  // The model's captioning settings with --beam and --max-len applied.
  GenerationSettings generation(const Engine& engine) const;
};

inline constexpr const char* kEngineFlagsHelp =
    R"(  --model DIR               model directory (default: $MUE_MODEL, else the embedded model)
  --threads N               OpenMP threads per engine call (default, or 0: all cores)
  --workers N               N single-threaded workers sharing the weights run the samples of
                            a call (default 0: the calling thread runs them)
  --compute-type TYPE       GEMM and convolution precision: f32 (default), bf16, int8, or
                            auto (the fastest this CPU runs natively)
  --beam N, --max-len N     captioning search settings (default: the model's)
)";

}  // namespace mue::apps
