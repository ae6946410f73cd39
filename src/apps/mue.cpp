// mue: caption an image or test an entailment with early exits, from the command line.
//
//   mue caption IMAGE [options]
//   mue entail IMAGE --hypothesis TEXT [--premise TEXT] [options]
//   mue info [--model DIR] [--compute-type TYPE]
#include "mue/mue.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "apps/common/exit_settings.h"
#include "apps/common/options.h"
#include "apps/common/result_json.h"
#include "mue/runtime.h"

namespace {

namespace apps = mue::apps;

const char* kUsage = R"(usage:
  mue caption IMAGE [options]
  mue entail IMAGE --hypothesis TEXT [--premise TEXT] [options]
  mue info [--model DIR] [--compute-type TYPE]

info prints the model, the machine (CPU, the ISA oneDNN chose, oneDNN's kernel per compute
type, what auto resolves to) and the weight bytes resident in the compute type.

options:
%ENGINE%  --policy FILE             exit policy JSON (as written by mue-calibrate); default: the
                            model's exit_policy.caption.json / exit_policy.entail.json for
                            the command, else its exit_policy.json, else full depth
  --compare                 also run at full depth and report the measured time saved
  --json                    machine-readable output

exit settings (over the policy file, in command-line order; every field of the policy file
is a flag too, with dashes: --exit-threshold-image X, --decoder-schedule NAME, ...):
%EXIT_FLAGS%)";

std::string usage() {
  std::string text = kUsage;
  text.replace(text.find("%ENGINE%"), 8, apps::kEngineFlagsHelp);
  text.replace(text.find("%EXIT_FLAGS%"), 12, apps::exit_flags_help(2, 28));
  return text;
}

// Refusals exit with status 2 and name the flag or file and the reason.
[[noreturn]] void fail(const std::string& message) {
  std::cerr << "mue: " << message << "\n";
  std::exit(2);
}

struct Args {
  std::string command, image, premise, hypothesis, policy_file;
  apps::EngineFlags engine;
  apps::ExitSettingFlags exits;
  bool json = false, compare = false, has_hypothesis = false;
};

Args parse(int argc, char** argv) {
  Args a;
  if (argc < 2) {
    std::cerr << usage();
    std::exit(2);
  }
  a.command = argv[1];
  if (a.command == "-h" || a.command == "--help") {
    std::cout << usage();
    std::exit(0);
  }
  if (a.command != "caption" && a.command != "entail" && a.command != "info")
    fail("unknown command \"" + a.command + "\" (caption, entail or info)");
  apps::ArgReader args(argc, argv, 2);
  while (!args.done()) {
    const std::string arg = args.next();
    if (a.engine.take(arg, args) || a.exits.take(arg, args)) continue;
    if (arg == "--json") {
      a.json = true;
    } else if (arg == "--compare") {
      a.compare = true;
    } else if (arg == "--premise") {
      a.premise = args.value(arg);
    } else if (arg == "--hypothesis") {
      a.hypothesis = args.value(arg);
      a.has_hypothesis = true;
    } else if (arg == "--policy") {
      a.policy_file = args.value(arg);
    } else if (arg == "-h" || arg == "--help") {
      std::cout << usage();
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
std::string policy_file(const Args& a, const std::string& model) {
  if (!a.policy_file.empty()) return a.policy_file;
  for (const std::string& name :
       {"exit_policy." + a.command + ".json", std::string("exit_policy.json")}) {
    std::filesystem::path shipped = std::filesystem::path(model) / name;
    if (std::filesystem::exists(shipped)) return shipped.string();
  }
  return {};
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
  mue::adopt_openmp_wait_policy(argv);  // before any OpenMP work: see mue/runtime.h
  Args a;
  try {
    a = parse(argc, argv);
  } catch (const mue::Error& e) {
    fail(e.what());
  }
  try {
    const std::string model = apps::find_model(a.engine.model);
    mue::EngineOptions options = a.engine.engine_options();
    const std::string file = policy_file(a, model);
    const mue::ExitPolicy start = file.empty() ? mue::ExitPolicy() : mue::ExitPolicy::load(file);
    options.exit_policy = a.exits.apply(start);  // Engine::load checks it against the model
    auto engine = mue::Engine::load(model, options);
    const mue::ModelConfig& cfg = engine->config();

    if (a.command == "info") {
      nlohmann::json info = {{"model", model},
                             {"name", cfg.name},
                             {"encoder_mode", mue::encoder_mode_name(cfg.encoder_mode)},
                             {"d_model", cfg.d_model},
                             {"encoder_layers", cfg.encoder_layers},
                             {"decoder_layers", cfg.decoder_layers},
                             {"image_size", {cfg.image_height, cfg.image_width}},
                             {"vocab_size", cfg.vocab_size},
                             {"compute_type", mue::compute_type_name(engine->compute_type())},
                             {"weight_bytes", engine->weight_bytes()}};
      const mue::MachineInfo machine = mue::machine_info();
      nlohmann::json kernels;
      for (mue::ComputeType t :
           {mue::ComputeType::kF32, mue::ComputeType::kBF16, mue::ComputeType::kInt8})
        kernels[mue::compute_type_name(t)] = mue::compute_type_implementation(t);
      info["machine"] = machine.to_json();
      info["machine"]["auto_compute_type"] =
          mue::compute_type_name(mue::resolve_compute_type(mue::ComputeType::kAuto));
      info["machine"]["onednn_kernels"] = kernels;
      std::cout << info.dump(2) << "\n";
      return 0;
    }

    // The command's calls: the engine's default policy (chosen above), the search settings of
    // --beam and --max-len.
    mue::CallOptions with_exits;
    with_exits.generation = a.engine.generation(*engine);
    mue::CallOptions full_depth = with_exits;
    full_depth.exit_policy = mue::ExitPolicy::full_depth();

    mue::PreparedImage image = engine->prepare_image(a.image);
    nlohmann::json out;
    double run_seconds = 0;
    auto run = [&](const mue::CallOptions& call, bool print) -> nlohmann::json {
      if (a.command == "caption") {
        mue::CaptionResult r = engine->caption(image, call);
        run_seconds = r.seconds.total - r.seconds.preprocess;
        if (print) {
          std::cout << "caption:  " << r.caption << "\n";
          print_exits(r.exits, r.seconds);
        }
        return r.to_json();
      }
      mue::EntailmentResult r = engine->entail(image, a.premise, a.hypothesis, call);
      run_seconds = r.seconds.total - r.seconds.preprocess;
      if (print) {
        std::cout << std::setprecision(3) << std::fixed << "answer:   " << r.label_name()
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
      run(with_exits, false);
      std::vector<double> exit_times, full_times;
      nlohmann::json full_json;
      for (int i = 0; i < kRepeats; ++i) {
        engine->clear_image_cache();
        run(with_exits, false);
        exit_times.push_back(run_seconds);
        engine->clear_image_cache();
        full_json = run(full_depth, false);
        full_times.push_back(run_seconds);
      }
      engine->clear_image_cache();
      std::sort(exit_times.begin(), exit_times.end());
      std::sort(full_times.begin(), full_times.end());
      double exit_s = exit_times[kRepeats / 2], full_s = full_times[kRepeats / 2];
      out = run(with_exits, !a.json);
      out["full_depth"] = full_json;
      out["median_seconds_with_exits"] = exit_s;
      out["median_seconds_full_depth"] = full_s;
      out["measured_time_reduction"] = 1.0 - exit_s / full_s;
      if (!a.json)
        std::cout << std::setprecision(1) << "measured: " << 1000 * exit_s << " ms with exits vs "
                  << 1000 * full_s << " ms at full depth (medians of " << kRepeats
                  << "): " << 100.0 * (1.0 - exit_s / full_s) << "% wall-clock saved\n";
    } else {
      out = run(with_exits, !a.json);
    }
    const mue::ExitPolicy& p = engine->default_exit_policy();
    apps::add_policy_fields(out, file, p);
    if (!a.json) {
      // The policy's JSON fields that differ from full depth's: rules, per-layer lists and
      // schedules included, as a file would spell them.
      nlohmann::json set = nlohmann::json::object();
      const nlohmann::json all = p.to_json(), full = mue::ExitPolicy::full_depth().to_json();
      for (const auto& [key, value] : all.items())
        if (!full.contains(key) || full[key] != value) set[key] = value;
      std::cout << "policy:   " << (file.empty() ? std::string("defaults") : file) << " -> "
                << (set.empty() ? std::string("full depth") : set.dump()) << "\n";
    }
    if (a.json) std::cout << out.dump(2) << "\n";
  } catch (const mue::Error& e) {
    fail(e.what());
  } catch (const std::exception& e) {
    fail(std::string("unexpected error: ") + e.what());
  }
  return 0;
}
