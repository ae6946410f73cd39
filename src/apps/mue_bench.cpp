// mue-bench: runs a dump under several exit settings and full depth in one process, interleaved,
// and reports quality, exit layers, the expected and the measured time reduction of each.
//
//   mue-bench --dump DIR [--setting NAME=POLICY] [--sweep KEY=V,...] [--fixed-depths] [options]
#include <filesystem>
#include <iostream>

#include "apps/common/adaptivity.h"
#include "apps/common/bench_dump.h"
#include "apps/common/cluster.h"
#include "apps/common/machine.h"
#include "apps/common/options.h"
#include "apps/common/plot.h"
#include "apps/common/report.h"
#include "apps/common/runner.h"
#include "apps/common/settings.h"
#include "mue/runtime.h"

namespace {

namespace apps = mue::apps;
using nlohmann::json;

constexpr const char* kTool = "mue-bench";

const char* kUsage = R"(usage: mue-bench --dump DIR [settings] [options]

Runs every setting and full depth on the dump, interleaved per chunk of samples so that machine
drift hits every setting alike, and reports per setting: quality (VE accuracy, or captioning's
BLEU-1..4, CIDEr-D and ROUGE-L), retention against full depth, exit-layer histograms, the
expected time reduction (spec 1.6) and the measured wall clock per sample (mean, p50, p95).

settings (full depth is always run, as the baseline "full_depth"):
%SETTINGS%  --fixed-depths            every fixed depth below full, one stack at a time

options:
  --dump DIR                the dump (bench/DUMPS.md)
  --task ve|caption         default: inferred from the manifest
%ENGINE%  --batch-size N            samples per engine call (default 1)
  --limit N                 only the first N manifest entries
  --metric NAME             quality metric for retention and the plot (default: accuracy for
                            VE, cider_d for captioning; or bleu1..bleu4, rouge_l)
  --json FILE               write the results as JSON
  --svg FILE                write a plot of quality against measured time reduction
  --plot-x reduction|ms     the plot's x axis (default: reduction)
  --per-sample              add every sample's prediction, exit layers and time to the JSON
  --adaptivity              print the adaptivity report (always in the JSON): exit-depth spread
                            per stream, depth of right and wrong answers (VE)
  --group-by F1,F2,...      also the mean depth per value of these manifest fields (difficulty
                            buckets, e.g. template,num_objects of the scene dumps); implies
                            --adaptivity
  --no-warmup               skip the untimed first batch
  --no-progress             no progress bar (it is shown only when stderr is a terminal)
)";

std::string usage() {
  std::string text = kUsage;
  text.replace(text.find("%SETTINGS%"), 10, apps::setting_help());
  text.replace(text.find("%ENGINE%"), 8, apps::kEngineFlagsHelp);
  return text;
}

struct Args {
  std::string dump, json_out, svg_out, metric;
  std::optional<apps::Task> task;
  apps::EngineFlags engine;
  std::vector<std::string> setting_args;
  std::vector<std::string> group_by;
  bool adaptivity = false;
  std::vector<apps::SweepAxis> sweep;
  bool fixed_depths = false, per_sample = false, warmup = true, progress = true;
  int batch_size = 1;
  size_t limit = 0;
  apps::PlotX plot_x = apps::PlotX::kMeasuredReduction;
};

Args parse(int argc, char** argv) {
  Args a;
  apps::ArgReader args(argc, argv);
  while (!args.done()) {
    const std::string arg = args.next();
    if (a.engine.take(arg, args)) continue;
    if (arg == "-h" || arg == "--help") {
      std::cout << usage();
      std::exit(0);
    } else if (arg == "--dump") {
      a.dump = args.value(arg);
    } else if (arg == "--task") {
      a.task = apps::parse_task(args.value(arg));
    } else if (arg == "--setting") {
      a.setting_args.push_back(args.value(arg));
    } else if (arg == "--sweep") {
      a.sweep.push_back(apps::parse_sweep(args.value(arg)));
    } else if (arg == "--fixed-depths") {
      a.fixed_depths = true;
    } else if (arg == "--batch-size") {
      a.batch_size = apps::parse_count(arg, args.value(arg), 1);
    } else if (arg == "--limit") {
      a.limit = static_cast<size_t>(apps::parse_count(arg, args.value(arg), 1));
    } else if (arg == "--metric") {
      a.metric = args.value(arg);
    } else if (arg == "--json") {
      a.json_out = args.value(arg);
    } else if (arg == "--svg") {
      a.svg_out = args.value(arg);
    } else if (arg == "--plot-x") {
      a.plot_x = apps::parse_plot_x(args.value(arg));
    } else if (arg == "--per-sample") {
      a.per_sample = true;
    } else if (arg == "--adaptivity") {
      a.adaptivity = true;
    } else if (arg == "--group-by") {
      a.group_by = apps::split(args.value(arg), ',');
      if (a.group_by.empty()) throw mue::Error("--group-by needs manifest field names");
      a.adaptivity = true;
    } else if (arg == "--no-warmup") {
      a.warmup = false;
    } else if (arg == "--no-progress") {
      a.progress = false;
    } else {
      throw mue::Error("unexpected argument \"" + arg + "\"");
    }
  }
  if (a.dump.empty()) throw mue::Error("--dump DIR is required");
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  mue::adopt_openmp_wait_policy(argv);  // before any OpenMP work: see mue/runtime.h
  const apps::Cluster& cluster = apps::Cluster::join_or_exit(kTool, &argc, &argv);
  // Settings and the dump are checked before the model loads, so that mistakes fail fast
  // (status 2); what fails after that exits with status 1.
  Args a;
  std::vector<apps::Setting> requested;
  apps::BenchDump dump;
  try {
    a = parse(argc, argv);
    for (const std::string& s : a.setting_args) requested.push_back(apps::parse_setting(s));
    for (const apps::Setting& s : apps::sweep_settings(a.sweep)) requested.push_back(s);
    apps::with_baseline(requested);  // names checked now; fixed depths come with the model
    if (!std::filesystem::is_directory(a.dump))
      throw mue::Error("dump directory " + a.dump + " does not exist");
    dump = apps::load_dump(a.dump, a.task, a.limit);
    if (a.metric.empty()) a.metric = apps::default_quality_metric(dump.task);
    apps::check_quality_metric(dump.task, a.metric);
  } catch (const mue::Error& e) {
    apps::usage_error(kTool, e.what());
  }

  try {
    const std::string model = apps::find_model(a.engine.model);
    mue::EngineOptions options = a.engine.engine_options();
    if (options.threads == 0) options.threads = cluster.default_threads();
    auto engine = mue::Engine::load(model, options);
    const mue::ModelConfig& config = engine->config();
    if (a.fixed_depths)
      for (const apps::Setting& s :
           apps::fixed_depth_settings(config.encoder_layers, config.decoder_layers))
        requested.push_back(s);
    std::vector<apps::Setting> settings = apps::with_baseline(requested);

    apps::RunOptions run_options;
    // Settings in another compute type run on an engine of their own, loaded once per type.
    std::vector<std::unique_ptr<mue::Engine>> typed_engines;
    for (const apps::Setting& s : settings) {
      if (!s.compute_type) continue;
      mue::ComputeType type = mue::resolve_compute_type(*s.compute_type);
      if (type == engine->compute_type() || run_options.engines.count(type)) continue;
      mue::EngineOptions typed = options;
      typed.compute_type = type;
      typed_engines.push_back(mue::Engine::load(model, typed));
      run_options.engines[type] = typed_engines.back().get();
    }
    run_options.batch_size = a.batch_size;
    run_options.warmup = a.warmup;
    run_options.progress = a.progress && apps::stderr_is_terminal();
    run_options.call.generation = a.engine.generation(*engine);
    apps::RunResult result = apps::run_settings(*engine, dump, settings, run_options);

    json dump_json = apps::dump_summary(dump, result);
    apps::report_bad_samples(dump_json, kTool);
    if (dump_json["scored"].get<size_t>() == 0)
      throw mue::Error("no sample of " + a.dump + " could be run");
    json settings_json = apps::summarize_settings(dump, result, config, {a.metric, a.per_sample});
    for (size_t k = 0; k < settings.size(); ++k)
      settings_json[k]["compute_type"] = mue::compute_type_name(
          mue::resolve_compute_type(settings[k].compute_type.value_or(engine->compute_type())));

    const int threads = engine->threads_per_call();
    json report = {{"tool", kTool},
                   {"model", apps::model_summary(model, config)},
                   {"dump", dump_json},
                   {"task", apps::task_name(dump.task)},
                   {"threads", threads},
                   {"compute_type", mue::compute_type_name(engine->compute_type())},
                   {"machine", apps::machine_block(threads)},
                   {"workers", options.workers},
                   {"mpi_ranks", cluster.size()},
                   {"batch_size", a.batch_size},
                   {"timing", apps::kTimingNote},
                   {"run_seconds", result.run_seconds},
                   {"quality_metric", a.metric},
                   {"baseline", apps::kBaselineName},
                   {"settings", settings_json}};
    if (dump.task == apps::Task::kCaption)
      report["generation"] = run_options.call.generation->to_json();
    report["adaptivity"] = apps::adaptivity_json(dump, result, a.group_by);

    std::cout << kTool << ": " << a.dump << " (" << apps::task_name(dump.task) << ", "
              << dump_json["scored"] << " samples scored, " << dump_json["bad"] << " bad), model "
              << model << ", " << threads << " threads, "
              << mue::compute_type_name(engine->compute_type())
              << (options.workers ? " x " + std::to_string(options.workers) + " workers" : "")
              << ", batch " << a.batch_size << "\n"
              << "machine: " << apps::machine_line(report["machine"]) << "\n";
    apps::print_table(std::cout, settings_json, dump.task, a.metric);
    if (a.adaptivity) apps::print_adaptivity(std::cout, report["adaptivity"]);
    if (cluster.root() && !a.json_out.empty()) apps::write_json(a.json_out, report);
    if (cluster.root() && !a.svg_out.empty())
      apps::write_svg(a.svg_out, settings_json, a.metric, a.plot_x,
                      std::string(kTool) + ": " +
                          std::filesystem::path(a.dump).filename().string() + " (" + config.name +
                          ", batch " + std::to_string(a.batch_size) + ")");
  } catch (const mue::Error& e) {
    std::cerr << kTool << ": " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << kTool << ": unexpected error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
