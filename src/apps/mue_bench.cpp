// mue-bench: runs a dump under several exit settings and full depth in one process, interleaved,
// and reports quality, exit layers, the expected and the measured time reduction of each.
//
//   mue-bench --dump DIR [--setting NAME=POLICY] [--sweep KEY=V,...] [--fixed-depths] [options]
#include <cstdlib>
#include <iostream>

#include "apps/bench_common.h"

namespace {

using mue::bench::json;

const char* kUsage = R"(usage: mue-bench --dump DIR [settings] [options]

Runs every setting and full depth on the dump, interleaved per chunk of samples so that machine
drift hits every setting alike, and reports per setting: quality (VE accuracy, or captioning's
BLEU-1..4, CIDEr-D and ROUGE-L), retention against full depth, exit-layer histograms, the
expected time reduction (spec 1.6) and the measured wall clock per sample (mean, p50, p95).

settings (full depth is always run, as the baseline "full_depth"):
%SETTINGS%
  --sweep KEY=V1,V2,...     one axis of a grid (keys as in SPEC); several --sweep make the
                            cross product, e.g. --sweep image=0.9,0.95 --sweep text=0.9,1
  --fixed-depths            every fixed depth below full, one stack at a time

options:
  --dump DIR                the dump (bench/DUMPS.md)
  --task ve|caption         default: inferred from the manifest
  --model DIR               model directory (default: $MUE_MODEL, else the embedded model)
  --threads N               threads (default: all cores)
  --batch-size N            samples per engine call (default 1)
  --limit N                 only the first N manifest entries
  --beam N, --max-len N     captioning search settings (default: the model's)
  --metric NAME             quality metric for retention and the plot (default: accuracy for
                            VE, cider_d for captioning; or bleu1..bleu4, rouge_l)
  --json FILE               write the results as JSON
  --svg FILE                write a plot of quality against measured time reduction
  --plot-x reduction|ms     the plot's x axis (default: reduction)
  --per-sample              add every sample's prediction, exit layers and time to the JSON
  --no-warmup               skip the untimed first batch
  --no-progress             no progress bar (it is shown only when stderr is a terminal)
)";

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "mue-bench: " << message << "\n(mue-bench --help for usage)\n";
  std::exit(2);
}

std::string usage() {
  std::string text = kUsage;
  text.replace(text.find("%SETTINGS%"), 10, mue::bench::kSettingHelp);
  return text;
}

std::string default_model_dir() {
  if (const char* env = std::getenv("MUE_MODEL")) return env;
  return MUE_DEFAULT_MODEL;
}

struct Args {
  std::string dump, model = default_model_dir(), json_out, svg_out, metric;
  std::optional<mue::bench::Task> task;
  std::vector<std::string> setting_args;
  std::vector<std::pair<std::string, std::vector<std::string>>> sweep;
  bool fixed_depths = false, per_sample = false, warmup = true, progress = true;
  int threads = 0, batch_size = 1, beam = 0, max_len = 0;
  size_t limit = 0;
  mue::bench::PlotX plot_x = mue::bench::PlotX::kMeasuredReduction;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(arg + " needs a value");
      return argv[++i];
    };
    auto positive = [&](const std::string& text) {
      int v = mue::bench::parse_int(arg, text);
      if (v < 1) throw mue::Error(arg + " must be at least 1, got " + text);
      return v;
    };
    if (arg == "-h" || arg == "--help") {
      std::cout << usage();
      std::exit(0);
    } else if (arg == "--dump") {
      a.dump = value();
    } else if (arg == "--model") {
      a.model = value();
    } else if (arg == "--task") {
      a.task = mue::bench::parse_task(value());
    } else if (arg == "--setting") {
      a.setting_args.push_back(value());
    } else if (arg == "--sweep") {
      a.sweep.push_back(mue::bench::parse_sweep(value()));
    } else if (arg == "--fixed-depths") {
      a.fixed_depths = true;
    } else if (arg == "--threads") {
      a.threads = positive(value());
    } else if (arg == "--batch-size") {
      a.batch_size = positive(value());
    } else if (arg == "--limit") {
      a.limit = static_cast<size_t>(positive(value()));
    } else if (arg == "--beam") {
      a.beam = positive(value());
    } else if (arg == "--max-len") {
      a.max_len = positive(value());
    } else if (arg == "--metric") {
      a.metric = value();
    } else if (arg == "--json") {
      a.json_out = value();
    } else if (arg == "--svg") {
      a.svg_out = value();
    } else if (arg == "--plot-x") {
      std::string v = value();
      if (v == "reduction")
        a.plot_x = mue::bench::PlotX::kMeasuredReduction;
      else if (v == "ms")
        a.plot_x = mue::bench::PlotX::kMeanMs;
      else
        usage_error("--plot-x must be reduction or ms, got \"" + v + "\"");
    } else if (arg == "--per-sample") {
      a.per_sample = true;
    } else if (arg == "--no-warmup") {
      a.warmup = false;
    } else if (arg == "--no-progress") {
      a.progress = false;
    } else {
      usage_error("unexpected argument \"" + arg + "\"");
    }
  }
  if (a.dump.empty()) usage_error("--dump DIR is required");
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  namespace bench = mue::bench;
  Args a;
  try {
    a = parse(argc, argv);
  } catch (const mue::Error& e) {
    usage_error(e.what());
  }
  // Settings and the dump are checked before the model loads, so that mistakes fail fast.
  std::vector<bench::Setting> requested;
  bench::BenchDump dump;
  try {
    for (const std::string& s : a.setting_args) requested.push_back(bench::parse_setting(s));
    for (const bench::Setting& s : bench::sweep_settings(a.sweep)) requested.push_back(s);
    bench::with_baseline(requested);  // names checked now; fixed depths come with the model
    if (!std::filesystem::is_directory(a.dump))
      throw mue::Error("dump directory " + a.dump + " does not exist");
    dump = bench::load_dump(a.dump, a.task, a.limit);
    if (a.metric.empty()) a.metric = bench::default_quality_metric(dump.task);
    bench::check_quality_metric(dump.task, a.metric);
  } catch (const mue::Error& e) {
    usage_error(e.what());
  }

  try {
    if (!std::filesystem::exists(a.model))
      throw mue::Error("model directory " + a.model + " does not exist (set --model or MUE_MODEL)");
    mue::EngineOptions options;
    options.threads = a.threads;
    auto engine = mue::Engine::load(a.model, options);
    if (a.beam) engine->generation().beam_size = a.beam;
    if (a.max_len) engine->generation().max_len = a.max_len;
    const mue::ModelConfig& config = engine->config();
    if (a.fixed_depths)
      for (const bench::Setting& s :
           bench::fixed_depth_settings(config.encoder_layers, config.decoder_layers))
        requested.push_back(s);
    std::vector<bench::Setting> settings = bench::with_baseline(requested);

    bench::RunOptions run_options;
    run_options.batch_size = a.batch_size;
    run_options.warmup = a.warmup;
    run_options.progress = a.progress && bench::stderr_is_terminal();
    bench::RunResult result = bench::run_settings(*engine, dump, settings, run_options);

    json dump_json = bench::dump_summary(dump, result);
    bench::report_bad_samples(dump_json, "mue-bench");
    if (dump_json["scored"].get<size_t>() == 0)
      throw mue::Error("no sample of " + a.dump + " could be run");
    json settings_json = bench::summarize_settings(dump, result, config, {a.metric, a.per_sample});

    json report = {{"tool", "mue-bench"},
                   {"model", bench::model_summary(a.model, config)},
                   {"dump", dump_json},
                   {"task", bench::task_name(dump.task)},
                   {"threads", mue::num_threads()},
                   {"batch_size", a.batch_size},
                   {"timing", bench::kTimingNote},
                   {"run_seconds", result.run_seconds},
                   {"quality_metric", a.metric},
                   {"baseline", bench::kBaselineName},
                   {"settings", settings_json}};
    if (dump.task == bench::Task::kCaption) {
      const mue::GenerationSettings& g = engine->generation();
      report["generation"] = {{"beam_size", g.beam_size},
                              {"max_len", g.max_len},
                              {"min_len", g.min_len},
                              {"no_repeat_ngram_size", g.no_repeat_ngram_size},
                              {"length_penalty", g.length_penalty}};
    }

    std::cout << "mue-bench: " << a.dump << " (" << bench::task_name(dump.task) << ", "
              << dump_json["scored"] << " samples scored, " << dump_json["bad"] << " bad), model "
              << a.model << ", " << mue::num_threads() << " threads, batch " << a.batch_size
              << "\n";
    bench::print_table(std::cout, settings_json, dump.task, a.metric);
    if (!a.json_out.empty()) bench::write_json(a.json_out, report);
    if (!a.svg_out.empty())
      bench::write_svg(a.svg_out, settings_json, a.metric, a.plot_x,
                       "mue-bench: " + std::filesystem::path(a.dump).filename().string() + " (" +
                           config.name + ", batch " + std::to_string(a.batch_size) + ")");
  } catch (const mue::Error& e) {
    std::cerr << "mue-bench: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "mue-bench: unexpected error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
