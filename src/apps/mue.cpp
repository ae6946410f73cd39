// mue: caption an image or test an entailment with early exits, from the command line.
//
//   mue caption IMAGE [options]
//   mue entail IMAGE --hypothesis TEXT [--premise TEXT] [options]
//   mue info [--model DIR]
#include "mue/mue.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

const char* kUsage = R"(usage:
  mue caption IMAGE [options]
  mue entail IMAGE --hypothesis TEXT [--premise TEXT] [options]
  mue info [--model DIR]

options:
  --model DIR               model directory (default: $MUE_MODEL, else the embedded model)
  --policy FILE             exit policy JSON (as written by mue-calibrate); default: the
                            model's exit_policy.caption.json / exit_policy.entail.json for
                            the command, else its exit_policy.json, else full depth
  --image-threshold X       exit the image stream when cos(out, in) > X   (0 < X <= 1)
  --text-threshold X        exit the text stream when cos(out, in) > X
  --decoder-threshold X     exit the decoder when cos(out, in) > X
  --schedule NAME           decoder threshold schedule: static | decaying | calm
  --kv-cache NAME           skipped decoder layers' cache: propagate | reference
  --fixed-depth I,T,D       exit after I image, T text and D decoder layers (0 = off)
  --threads N               threads (default, or 0: all cores)
  --beam N, --max-len N     captioning search settings (default: the model's)
  --compare                 also run at full depth and report the measured time saved
  --json                    machine-readable output
)";

[[noreturn]] void fail(const std::string& message) {
  std::cerr << "mue: " << message << "\n";
  std::exit(2);
}

std::string default_model_dir() {
  if (const char* env = std::getenv("MUE_MODEL")) return env;
  return MUE_DEFAULT_MODEL;
}

double parse_number(const std::string& flag, const std::string& value) {
  try {
    size_t used = 0;
    double v = std::stod(value, &used);
    if (used != value.size()) throw std::invalid_argument("trailing characters");
    return v;
  } catch (const std::exception&) {
    fail(flag + " needs a number, got \"" + value + "\"");
  }
}

// Counts (threads, beam, length, depths): a fraction or a number below `min` is refused rather
// than truncated or taken as a default.
int parse_count(const std::string& flag, const std::string& value, int min) {
  const double v = parse_number(flag, value);
  if (v != std::floor(v) || v > 1e6) fail(flag + " needs a whole number, got \"" + value + "\"");
  if (v < min) fail(flag + " must be at least " + std::to_string(min) + ", got " + value);
  return static_cast<int>(v);
}

struct Args {
  std::string command, image, premise, hypothesis, model = default_model_dir(), policy_file;
  std::map<std::string, std::string> options;
  bool json = false, compare = false, has_hypothesis = false;
};

Args parse(int argc, char** argv) {
  Args a;
  if (argc < 2) {
    std::cerr << kUsage;
    std::exit(2);
  }
  a.command = argv[1];
  if (a.command == "-h" || a.command == "--help") {
    std::cout << kUsage;
    std::exit(0);
  }
  if (a.command != "caption" && a.command != "entail" && a.command != "info")
    fail("unknown command \"" + a.command + "\" (caption, entail or info)");
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--json") {
      a.json = true;
    } else if (arg == "--compare") {
      a.compare = true;
    } else if (arg == "--model") {
      a.model = value();
    } else if (arg == "--premise") {
      a.premise = value();
    } else if (arg == "--hypothesis") {
      a.hypothesis = value();
      a.has_hypothesis = true;
    } else if (arg == "--policy") {
      a.policy_file = value();
    } else if (arg == "--image-threshold" || arg == "--text-threshold" ||
               arg == "--decoder-threshold" || arg == "--schedule" || arg == "--kv-cache" ||
               arg == "--fixed-depth" || arg == "--threads" || arg == "--beam" ||
               arg == "--max-len") {
      a.options[arg] = value();
    } else if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else if (!arg.empty() && arg[0] == '-') {
      fail("unknown option " + arg);
    } else if (a.image.empty() && a.command != "info") {
      a.image = arg;
    } else {
      fail("unexpected argument \"" + arg + "\"");
    }
  }
  if (a.command != "info" && a.image.empty()) fail(a.command + " needs an IMAGE");
  if (a.command == "entail" && !a.has_hypothesis) fail("entail needs --hypothesis TEXT");
  return a;
}

// The policy file the command uses: --policy, else the model's calibrated policy for this task
// (tasks calibrate apart: entailment's single decoder pass and captioning's per-step exits want
// different thresholds), else its general one; empty for full depth.
std::string policy_file(const Args& a) {
  if (!a.policy_file.empty()) return a.policy_file;
  for (const std::string& name :
       {"exit_policy." + a.command + ".json", std::string("exit_policy.json")}) {
    std::filesystem::path shipped = std::filesystem::path(a.model) / name;
    if (std::filesystem::exists(shipped)) return shipped.string();
  }
  return {};
}

// The policy from `file` (empty: defaults), with explicit flags taking precedence.
mue::ExitPolicy make_policy(const Args& a, const std::string& file) {
  mue::ExitPolicy p;
  if (!file.empty()) p = mue::ExitPolicy::load(file);
  nlohmann::json j = p.to_json();
  auto opt = [&](const char* flag) -> const std::string* {
    auto it = a.options.find(flag);
    return it == a.options.end() ? nullptr : &it->second;
  };
  if (auto v = opt("--image-threshold"))
    j["exit_threshold_image"] = parse_number("--image-threshold", *v);
  if (auto v = opt("--text-threshold"))
    j["exit_threshold_text"] = parse_number("--text-threshold", *v);
  if (auto v = opt("--decoder-threshold"))
    j["exit_threshold_decoder"] = parse_number("--decoder-threshold", *v);
  if (auto v = opt("--schedule")) j["decoder_schedule"] = *v;
  if (auto v = opt("--kv-cache")) j["skipped_layer_cache"] = *v;
  if (auto v = opt("--fixed-depth")) {
    std::vector<int> depths;
    std::stringstream ss(*v);
    std::string part;
    while (std::getline(ss, part, ',')) depths.push_back(parse_count("--fixed-depth", part, 0));
    if (depths.size() != 3) fail("--fixed-depth needs three numbers I,T,D, got \"" + *v + "\"");
    j["fixed_depth_image"] = depths[0];
    j["fixed_depth_text"] = depths[1];
    j["fixed_depth_decoder"] = depths[2];
  }
  return mue::ExitPolicy::from_json(j, "command-line exit policy");
}

std::string layers_text(const std::vector<int>& layers) {
  std::ostringstream s;
  for (size_t i = 0; i < layers.size(); ++i) s << (i ? " " : "") << layers[i];
  return s.str();
}

void print_exits(const mue::ExitStatistics& e, const mue::StageSeconds& s) {
  std::cout << std::fixed << std::setprecision(1);
  std::cout << "exits:    image stream " << e.image_layers << "/" << e.encoder_depth
            << " layers, text stream " << e.text_layers << "/" << e.encoder_depth
            << " layers, decoder " << std::setprecision(2) << e.mean_decoder_layers() << "/"
            << e.decoder_depth << " layers";
  if (e.decoder_layers.size() > 1)
    std::cout << " (per token: " << layers_text(e.decoder_layers) << ")";
  std::cout << "\n" << std::setprecision(1);
  std::cout << "saved:    " << 100.0 * e.expected_time_reduction()
            << "% of layer time (expected time reduction, spec 1.6)\n";
  std::cout << "time:     " << std::setprecision(1) << 1000 * s.total << " ms (preprocess "
            << 1000 * s.preprocess << ", resnet " << 1000 * s.resnet << ", image stream "
            << 1000 * s.image_stream << ", text stream " << 1000 * s.text_stream << ", decoder "
            << 1000 * s.decoder << ")\n";
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse(argc, argv);
  try {
    mue::EngineOptions options;
    if (a.options.count("--threads"))
      options.threads = parse_count("--threads", a.options["--threads"], 0);
    const std::string file = policy_file(a);
    options.exit_policy = make_policy(a, file);
    if (!std::filesystem::exists(a.model))
      fail("model directory " + a.model + " does not exist (set --model or MUE_MODEL)");
    auto engine = mue::Engine::load(a.model, options);
    if (a.options.count("--beam"))
      engine->generation().beam_size = parse_count("--beam", a.options["--beam"], 1);
    if (a.options.count("--max-len"))
      engine->generation().max_len = parse_count("--max-len", a.options["--max-len"], 1);
    const mue::ModelConfig& cfg = engine->config();

    if (a.command == "info") {
      nlohmann::json info = {{"model", a.model},
                             {"name", cfg.name},
                             {"encoder_mode", mue::encoder_mode_name(cfg.encoder_mode)},
                             {"d_model", cfg.d_model},
                             {"encoder_layers", cfg.encoder_layers},
                             {"decoder_layers", cfg.decoder_layers},
                             {"image_size", {cfg.image_height, cfg.image_width}},
                             {"vocab_size", cfg.vocab_size}};
      std::cout << info.dump(2) << "\n";
      return 0;
    }

    mue::PreparedImage image = engine->prepare_image(a.image);
    nlohmann::json out;
    double run_seconds = 0;
    auto run = [&]() -> nlohmann::json {
      if (a.command == "caption") {
        mue::CaptionResult r = engine->caption(image);
        run_seconds = r.seconds.total - r.seconds.preprocess;
        if (!a.json) {
          std::cout << "caption:  " << r.caption << "\n";
          print_exits(r.exits, r.seconds);
        }
        return r.to_json();
      }
      mue::EntailmentResult r = engine->entail(image, a.premise, a.hypothesis);
      run_seconds = r.seconds.total - r.seconds.preprocess;
      if (!a.json) {
        std::cout << std::setprecision(3) << std::fixed << "answer:   " << r.label
                  << " (entailment " << r.p_entailment << ", neutral " << r.p_neutral
                  << ", contradiction " << r.p_contradiction << ")\n";
        print_exits(r.exits, r.seconds);
      }
      return r.to_json();
    };
    if (a.compare) {
      // Warm up (oneDNN creates its primitives on first use), then alternate exits and full
      // depth a few times so that machine drift hits both alike; report the medians.
      constexpr int kRepeats = 3;
      mue::ExitPolicy chosen = engine->exit_policy();
      bool quiet = a.json;
      a.json = true;
      run();
      std::vector<double> with_exits, full;
      for (int i = 0; i < kRepeats; ++i) {
        engine->set_exit_policy(chosen);
        engine->clear_image_cache();
        run();
        with_exits.push_back(run_seconds);
        engine->set_exit_policy(mue::ExitPolicy::full_depth());
        engine->clear_image_cache();
        out["full_depth"] = run();
        full.push_back(run_seconds);
      }
      a.json = quiet;
      engine->set_exit_policy(chosen);
      engine->clear_image_cache();
      std::sort(with_exits.begin(), with_exits.end());
      std::sort(full.begin(), full.end());
      double exit_s = with_exits[kRepeats / 2], full_s = full[kRepeats / 2];
      nlohmann::json full_depth = out["full_depth"];
      out = run();
      out["full_depth"] = full_depth;
      out["median_seconds_with_exits"] = exit_s;
      out["median_seconds_full_depth"] = full_s;
      out["measured_time_reduction"] = 1.0 - exit_s / full_s;
      if (!a.json)
        std::cout << std::setprecision(1) << "measured: " << 1000 * exit_s << " ms with exits vs "
                  << 1000 * full_s << " ms at full depth (medians of " << kRepeats
                  << "): " << 100.0 * (1.0 - exit_s / full_s) << "% wall-clock saved\n";
    } else {
      out = run();
    }
    out["policy_file"] = file.empty() ? nlohmann::json(nullptr) : nlohmann::json(file);
    out["policy"] = engine->exit_policy().to_json();
    if (!a.json) {
      const mue::ExitPolicy& p = engine->exit_policy();
      std::cout << "policy:   " << (file.empty() ? std::string("defaults") : file)
                << std::setprecision(4) << std::defaultfloat << " -> thresholds image "
                << p.exit_threshold_image << ", text " << p.exit_threshold_text << ", decoder "
                << p.exit_threshold_decoder << "\n";
    }
    if (a.json) std::cout << out.dump(2) << "\n";
  } catch (const mue::Error& e) {
    fail(e.what());
  } catch (const std::exception& e) {
    fail(std::string("unexpected error: ") + e.what());
  }
  return 0;
}
