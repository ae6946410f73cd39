// mue-calibrate: finds the exit thresholds (image, text, decoder; per stack or per layer) and the
// decoder's rule (cosine or answer confidence) that cut the most measured wall clock (or expected
// layer count) on a dev dump while keeping quality retention against full depth at or above a
// target (plus a margin), writes that exit policy as JSON (the library and the CLI load it), and
// reports it on a test dump with the dev/test gap.
//
//   mue-calibrate --dev-dump DIR --out POLICY.json [--test-dump DIR] [--target 0.99] [options]
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>

#include "apps/common/bench_dump.h"
#include "apps/common/cluster.h"
#include "apps/common/exit_settings.h"
#include "apps/common/options.h"
#include "apps/common/report.h"
#include "apps/common/runner.h"
#include "apps/common/settings.h"
#include "mue/runtime.h"

namespace {

namespace apps = mue::apps;
using nlohmann::json;

constexpr const char* kTool = "mue-calibrate";

const char* kUsage = R"(usage: mue-calibrate --dev-dump DIR --out POLICY.json [options]

Coordinate search over the exit thresholds: for each stack in turn (image, text, decoder) every
value of its grid is run on the dev dump beside full depth and the current choice, interleaved as
mue-bench does; the value with the largest measured wall-clock reduction whose quality retention
is >= the target is kept. Rounds repeat until nothing changes (or --rounds). Then the policy is
written with a "calibration" object holding the dev numbers, and run on --test-dump.

options:
  --dev-dump DIR            the dump to calibrate on (bench/DUMPS.md)
  --test-dump DIR           a dump to report the chosen policy on (beside full depth)
  --out FILE                the exit policy JSON to write
  --json FILE               the whole report (search steps, dev and test results) as JSON
  --target R                minimum quality retention against full depth (default 0.99)
  --metric NAME             quality metric (default: accuracy for VE, cider_d for captioning)
  --objective NAME          measured (wall-clock reduction, default) or expected (spec 1.6's
                            layer-count reduction); both are reported either way
  --grid V1,V2,...          thresholds tried for every stack
                            (default 0.7,0.8,0.85,0.9,0.93,0.95,0.97,0.99,1)
  --image-grid, --text-grid, --decoder-grid V1,...   a stack's own grid
  --stacks LIST             stacks to search, in order (default image,text,decoder)
  --rules LIST              decoder rules to search (cosine, confidence; default cosine): the
                            decoder step tries every rule with its grid
  --confidence-grid V1,...  the confidence rule's thresholds
                            (default 0.5,0.6,0.7,0.8,0.9,0.95,0.98,0.99,1)
  --confidence-measure NAME top1 (default) or margin (top-1 minus top-2 probability)
  --per-layer LIST          stacks whose thresholds are then refined per layer (image, text,
                            decoder): after the stack's single threshold is chosen, each layer's
                            threshold in turn is searched over the stack's grid
  --start FILE              start the search from this exit policy (e.g. an earlier
                            calibration, to refine it with finer grids) instead of full depth
  --margin M                calibrate to retention >= target + M on dev, so that the test
                            retention, which moves by sampling noise, keeps the target
                            (default 0); the report gives the dev/test gap
  --schedules LIST          decoder schedules to search with the decoder threshold
                            (static, decaying, calm; default: static only)
  --kv-cache NAME           skipped decoder layers' cache: propagate (default) or reference
                            (--kv NAME: the same)
  --rounds N                at most N rounds over the stacks (default 2)
  --task ve|caption         default: inferred from the manifests
%ENGINE%  --batch-size N            samples per engine call (default 1)
  --limit N, --test-limit N only the first N manifest entries of the dev / test dump
  --no-warmup, --no-progress
)";

std::string usage() {
  std::string text = kUsage;
  text.replace(text.find("%ENGINE%"), 8, apps::kEngineFlagsHelp);
  return text;
}

enum class Stack { kImage, kText, kDecoder };

const char* stack_name(Stack s) {
  return s == Stack::kImage ? "image" : s == Stack::kText ? "text" : "decoder";
}

std::vector<double> parse_grid(const std::string& flag, const std::string& text) {
  std::vector<double> grid;
  for (const std::string& v : apps::split(text, ',')) {
    double x = apps::parse_double(flag, v);
    if (!(x > 0 && x <= 1)) throw mue::Error(flag + ": threshold " + v + " is outside (0, 1]");
    grid.push_back(x);
  }
  if (grid.empty()) throw mue::Error(flag + " is empty");
  return grid;
}

struct Args {
  std::string dev_dump, test_dump, out, json_out, metric, start;
  std::optional<apps::Task> task;
  apps::EngineFlags engine;
  double target = 0.99;
  bool objective_measured = true, warmup = true, progress = true;
  std::map<Stack, std::vector<double>> grids;
  std::vector<Stack> stacks{Stack::kImage, Stack::kText, Stack::kDecoder};
  std::vector<mue::DecoderRule> rules{mue::DecoderRule::kCosine};
  std::vector<double> confidence_grid{0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0};
  mue::ConfidenceMeasure measure = mue::ConfidenceMeasure::kTop1;
  std::vector<Stack> per_layer;
  double margin = 0;
  std::vector<mue::DecoderSchedule> schedules{mue::DecoderSchedule::kStatic};
  mue::SkippedLayerCache kv = mue::SkippedLayerCache::kPropagate;
  int rounds = 2, batch_size = 1;
  size_t limit = 0, test_limit = 0;
};

// One exit-policy field read with the exit-settings grammar, e.g. a --schedules entry.
mue::ExitPolicy policy_with(const char* key, const std::string& value, const std::string& flag) {
  json fields = json::object();
  apps::apply_exit_setting(fields, apps::exit_setting_named(key, flag), value, flag);
  return mue::ExitPolicy::from_json(fields, flag);
}

Args parse(int argc, char** argv) {
  Args a;
  std::vector<double> grid = {0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99, 1.0};
  std::map<Stack, std::vector<double>> own;
  apps::ArgReader args(argc, argv);
  while (!args.done()) {
    const std::string arg = args.next();
    if (a.engine.take(arg, args)) continue;
    if (arg == "-h" || arg == "--help") {
      std::cout << usage();
      std::exit(0);
    } else if (arg == "--dev-dump") {
      a.dev_dump = args.value(arg);
    } else if (arg == "--test-dump") {
      a.test_dump = args.value(arg);
    } else if (arg == "--out") {
      a.out = args.value(arg);
    } else if (arg == "--json") {
      a.json_out = args.value(arg);
    } else if (arg == "--task") {
      a.task = apps::parse_task(args.value(arg));
    } else if (arg == "--metric") {
      a.metric = args.value(arg);
    } else if (arg == "--target") {
      a.target = apps::parse_double(arg, args.value(arg));
      if (!(a.target > 0 && a.target <= 1.5))
        throw mue::Error("--target must be a retention ratio such as 0.99");
    } else if (arg == "--objective") {
      std::string v = args.value(arg);
      if (v != "measured" && v != "expected")
        throw mue::Error("--objective must be measured or expected, got \"" + v + "\"");
      a.objective_measured = v == "measured";
    } else if (arg == "--grid") {
      grid = parse_grid(arg, args.value(arg));
    } else if (arg == "--image-grid") {
      own[Stack::kImage] = parse_grid(arg, args.value(arg));
    } else if (arg == "--text-grid") {
      own[Stack::kText] = parse_grid(arg, args.value(arg));
    } else if (arg == "--decoder-grid") {
      own[Stack::kDecoder] = parse_grid(arg, args.value(arg));
    } else if (arg == "--stacks") {
      a.stacks.clear();
      for (const std::string& s : apps::split(args.value(arg), ',')) {
        if (s == "image")
          a.stacks.push_back(Stack::kImage);
        else if (s == "text")
          a.stacks.push_back(Stack::kText);
        else if (s == "decoder")
          a.stacks.push_back(Stack::kDecoder);
        else
          throw mue::Error("--stacks: unknown stack \"" + s + "\" (image, text, decoder)");
      }
      if (a.stacks.empty()) throw mue::Error("--stacks is empty");
    } else if (arg == "--rules") {
      a.rules.clear();
      for (const std::string& r : apps::split(args.value(arg), ','))
        a.rules.push_back(policy_with("decoder_rule", r, arg).decoder_rule);
      if (a.rules.empty()) throw mue::Error("--rules is empty");
    } else if (arg == "--confidence-grid") {
      a.confidence_grid = parse_grid(arg, args.value(arg));
    } else if (arg == "--confidence-measure") {
      a.measure = policy_with("confidence_measure", args.value(arg), arg).confidence_measure;
    } else if (arg == "--per-layer") {
      for (const std::string& s : apps::split(args.value(arg), ',')) {
        if (s == "image")
          a.per_layer.push_back(Stack::kImage);
        else if (s == "text")
          a.per_layer.push_back(Stack::kText);
        else if (s == "decoder")
          a.per_layer.push_back(Stack::kDecoder);
        else
          throw mue::Error("--per-layer: unknown stack \"" + s + "\" (image, text, decoder)");
      }
    } else if (arg == "--start") {
      a.start = args.value(arg);
      mue::ExitPolicy::load(a.start);  // checked now
    } else if (arg == "--margin") {
      a.margin = apps::parse_double(arg, args.value(arg));
      if (!(a.margin >= 0 && a.margin < 0.5))
        throw mue::Error("--margin must be a retention difference in [0, 0.5), such as 0.005");
    } else if (arg == "--schedules") {
      a.schedules.clear();
      for (const std::string& s : apps::split(args.value(arg), ','))
        a.schedules.push_back(policy_with("decoder_schedule", s, arg).decoder_schedule);
      if (a.schedules.empty()) throw mue::Error("--schedules is empty");
    } else if (arg == "--kv" || arg == "--kv-cache") {
      a.kv = policy_with("skipped_layer_cache", args.value(arg), arg).skipped_layer_cache;
    } else if (arg == "--rounds") {
      a.rounds = apps::parse_count(arg, args.value(arg), 1);
    } else if (arg == "--batch-size") {
      a.batch_size = apps::parse_count(arg, args.value(arg), 1);
    } else if (arg == "--limit") {
      a.limit = static_cast<size_t>(apps::parse_count(arg, args.value(arg), 1));
    } else if (arg == "--test-limit") {
      a.test_limit = static_cast<size_t>(apps::parse_count(arg, args.value(arg), 1));
    } else if (arg == "--no-warmup") {
      a.warmup = false;
    } else if (arg == "--no-progress") {
      a.progress = false;
    } else {
      throw mue::Error("unexpected argument \"" + arg + "\"");
    }
  }
  if (a.dev_dump.empty()) throw mue::Error("--dev-dump DIR is required");
  if (a.out.empty()) throw mue::Error("--out POLICY.json is required");
  for (Stack s : {Stack::kImage, Stack::kText, Stack::kDecoder})
    a.grids[s] = own.count(s) ? own[s] : grid;
  return a;
}

// The decoder under `rule`, the other rule's thresholds off (so that a written policy holds only
// what it uses).
mue::ExitPolicy with_rule(mue::ExitPolicy p, mue::DecoderRule rule) {
  if (rule == p.decoder_rule) return p;
  p.decoder_rule = rule;
  if (rule == mue::DecoderRule::kConfidence) {
    p.exit_threshold_decoder = 1.0;
    p.exit_thresholds_decoder.clear();
  } else {
    p.confidence_threshold = 1.0;
    p.confidence_thresholds.clear();
  }
  return p;
}

// The stack's threshold set to `threshold` (its per-layer list cleared); the decoder's under
// `rule`, which becomes the policy's.
mue::ExitPolicy with_stack(mue::ExitPolicy p, Stack stack, double threshold,
                           mue::DecoderRule rule = mue::DecoderRule::kCosine) {
  if (stack == Stack::kImage) {
    p.exit_threshold_image = threshold;
    p.exit_thresholds_image.clear();
  }
  if (stack == Stack::kText) {
    p.exit_threshold_text = threshold;
    p.exit_thresholds_text.clear();
  }
  if (stack == Stack::kDecoder) {
    p = with_rule(p, rule);
    if (rule == mue::DecoderRule::kConfidence) {
      p.confidence_threshold = threshold;
      p.confidence_thresholds.clear();
    } else {
      p.exit_threshold_decoder = threshold;
      p.exit_thresholds_decoder.clear();
    }
  }
  return p;
}

// The per-layer list the stack's search refines (under the decoder's current rule), and the
// single threshold it starts from.
std::vector<double>& layer_list(mue::ExitPolicy& p, Stack stack, double** single) {
  switch (stack) {
    case Stack::kImage:
      *single = &p.exit_threshold_image;
      return p.exit_thresholds_image;
    case Stack::kText:
      *single = &p.exit_threshold_text;
      return p.exit_thresholds_text;
    case Stack::kDecoder:
      break;
  }
  if (p.decoder_rule == mue::DecoderRule::kConfidence) {
    *single = &p.confidence_threshold;
    return p.confidence_thresholds;
  }
  *single = &p.exit_threshold_decoder;
  return p.exit_thresholds_decoder;
}

// The stack's threshold after layer `layer` set to `threshold`: the single threshold becomes a
// list first (then the single value is reset to 1, which the list replaces).
mue::ExitPolicy with_layer(mue::ExitPolicy p, Stack stack, int layer, int layers,
                           double threshold) {
  double* single = nullptr;
  std::vector<double>& list = layer_list(p, stack, &single);
  if (list.empty()) list.assign(static_cast<size_t>(layers - 1), *single);
  list[static_cast<size_t>(layer)] = threshold;
  *single = 1.0;
  return p;
}

// The numbers of one setting that the search compares, from its mue-bench summary.
struct Measured {
  double quality = 0, full_quality = 0, measured = 0, expected = 0, mean_ms = 0, full_mean_ms = 0;
  std::optional<double> retention;
  json summary;  // the setting's whole summary
};

Measured measured_of(const json& setting, const json& baseline) {
  Measured m;
  m.quality = setting["quality"]["value"].get<double>();
  m.full_quality = setting["quality"]["full_depth"].get<double>();
  if (setting["quality"]["retention"].is_number())
    m.retention = setting["quality"]["retention"].get<double>();
  m.measured = setting["time"]["measured_time_reduction"].get<double>();
  m.expected = setting["expected_time_reduction"].get<double>();
  m.mean_ms = setting["time"]["mean_ms"].get<double>();
  m.full_mean_ms = baseline["time"]["mean_ms"].get<double>();
  m.summary = setting;
  return m;
}

json numbers_json(const Measured& m) {
  return {{"quality", m.quality},
          {"full_depth_quality", m.full_quality},
          {"retention", m.retention ? json(*m.retention) : json(nullptr)},
          {"measured_time_reduction", m.measured},
          {"expected_time_reduction", m.expected},
          {"mean_ms", m.mean_ms},
          {"full_depth_mean_ms", m.full_mean_ms},
          {"mean_layers", m.summary["mean_layers"]}};
}

struct Context {
  const mue::Engine* engine = nullptr;
  apps::RunOptions run_options;
  std::string metric;
};

// Runs `settings` (full depth added first) on a dump; returns the summaries in that order.
json run_and_summarize(Context& ctx, const apps::BenchDump& dump,
                       const std::vector<apps::Setting>& settings, json* dump_json) {
  apps::RunResult result =
      apps::run_settings(*ctx.engine, dump, apps::with_baseline(settings), ctx.run_options);
  *dump_json = apps::dump_summary(dump, result);
  if ((*dump_json)["scored"].get<size_t>() == 0)
    throw mue::Error("no sample of " + dump.dir.string() + " could be run");
  return apps::summarize_settings(dump, result, ctx.engine->config(), {ctx.metric, false});
}

}  // namespace

int main(int argc, char** argv) {
  mue::adopt_openmp_wait_policy(argv);  // before any OpenMP work: see mue/runtime.h
  const apps::Cluster& cluster = apps::Cluster::join_or_exit(kTool, &argc, &argv);
  Args a;
  apps::BenchDump dev, test;
  try {
    a = parse(argc, argv);
    for (const std::string& d : {a.dev_dump, a.test_dump})
      if (!d.empty() && !std::filesystem::is_directory(d))
        throw mue::Error("dump directory " + d + " does not exist");
    dev = apps::load_dump(a.dev_dump, a.task, a.limit);
    if (!a.test_dump.empty()) {
      test = apps::load_dump(a.test_dump, a.task ? a.task : std::optional(dev.task), a.test_limit);
      if (test.task != dev.task) throw mue::Error("the dev and test dumps hold different tasks");
    }
    if (a.metric.empty()) a.metric = apps::default_quality_metric(dev.task);
    apps::check_quality_metric(dev.task, a.metric);
  } catch (const mue::Error& e) {
    apps::usage_error(kTool, e.what());
  }

  try {
    const std::string model = apps::find_model(a.engine.model);
    mue::EngineOptions options = a.engine.engine_options();
    if (options.threads == 0) options.threads = cluster.default_threads();
    auto engine = mue::Engine::load(model, options);
    const int threads = engine->threads_per_call();
    Context ctx;
    ctx.engine = engine.get();
    ctx.metric = a.metric;
    ctx.run_options.batch_size = a.batch_size;
    ctx.run_options.warmup = a.warmup;
    ctx.run_options.progress = a.progress && apps::stderr_is_terminal();
    ctx.run_options.call.generation = a.engine.generation(*engine);

    // VE runs the decoder once with the static threshold (spec 1.4): schedules do not apply.
    if (dev.task == apps::Task::kVe) a.schedules = {mue::DecoderSchedule::kStatic};
    mue::ExitPolicy current;
    current.skipped_layer_cache = a.kv;
    current.decoder_schedule = a.schedules.front();
    current.confidence_measure = a.measure;
    if (!a.start.empty()) {
      current = mue::ExitPolicy::load(a.start);
      engine->check_exit_policy(current);
    }
    const int enc_layers = engine->config().encoder_layers;
    const int dec_layers = engine->config().decoder_layers;
    // The dev target carries the margin: test retention moves by sampling noise.
    const double dev_target = a.target + a.margin;
    std::optional<Measured> current_numbers;
    json search = json::array(), dev_dump_json, dev_settings;
    bool bad_reported = false;
    int rounds_run = 0;
    std::cout << "mue-calibrate: " << a.dev_dump << " (" << apps::task_name(dev.task) << "), "
              << a.metric << " retention >= " << a.target
              << (a.margin > 0 ? " (dev: >= " + apps::short_number(dev_target) + ")" : "")
              << ", objective "
              << (a.objective_measured ? "measured wall-clock" : "expected (layer-count)")
              << " time reduction\n";

    for (int round = 1; round <= a.rounds; ++round) {
      ++rounds_run;
      bool changed = false;
      // Steps: every stack's single threshold (the decoder's under every rule), then, for the
      // stacks searched per layer, each layer's threshold in turn.
      std::vector<std::pair<Stack, int>> steps;
      for (Stack stack : a.stacks) steps.push_back({stack, -1});
      for (Stack stack : a.stacks)
        if (std::find(a.per_layer.begin(), a.per_layer.end(), stack) != a.per_layer.end())
          for (int l = 0; l + 1 < (stack == Stack::kDecoder ? dec_layers : enc_layers); ++l)
            steps.push_back({stack, l});
      for (auto [stack, layer] : steps) {
        // Candidates: the stack's grid (and rules, schedules), with the current choice first.
        std::vector<mue::ExitPolicy> candidates{current};
        auto add = [&](const mue::ExitPolicy& p) {
          bool seen = false;
          for (const auto& c : candidates) seen = seen || apps::same_policy(c, p);
          if (!seen) candidates.push_back(p);
        };
        if (layer >= 0 && stack != Stack::kDecoder) {
          for (double v : a.grids[stack]) add(with_layer(current, stack, layer, enc_layers, v));
        } else if (layer >= 0) {
          // Every searched rule, each from its own thresholds (a rule not in use starts from
          // 1.0, off, everywhere but this layer).
          for (mue::DecoderRule rule : a.rules) {
            mue::ExitPolicy start = with_rule(current, rule);
            for (double v :
                 rule == mue::DecoderRule::kConfidence ? a.confidence_grid : a.grids[stack])
              add(with_layer(start, stack, layer, dec_layers, v));
          }
        } else if (stack != Stack::kDecoder) {
          for (double v : a.grids[stack]) add(with_stack(current, stack, v));
        } else {
          for (mue::DecoderRule rule : a.rules)
            for (double v :
                 rule == mue::DecoderRule::kConfidence ? a.confidence_grid : a.grids[stack])
              for (mue::DecoderSchedule s : a.schedules) {
                mue::ExitPolicy p = with_stack(current, stack, v, rule);
                p.decoder_schedule = s;
                add(p);
              }
        }
        std::vector<apps::Setting> settings;
        for (const auto& p : candidates)
          if (!apps::same_policy(p, mue::ExitPolicy::full_depth()))
            settings.push_back({apps::policy_name(p), p});
        const std::string step_name =
            std::string(stack_name(stack)) +
            (layer >= 0 ? " after layer " + std::to_string(layer + 1) : std::string());
        ctx.run_options.label = "mue-calibrate round " + std::to_string(round) + " " + step_name;
        json summaries = run_and_summarize(ctx, dev, settings, &dev_dump_json);
        if (!bad_reported) {
          apps::report_bad_samples(dev_dump_json, kTool);
          bad_reported = true;
        }
        const json& baseline = summaries[0];
        if (baseline["quality"]["value"].get<double>() <= 0)
          throw mue::Error("full-depth " + a.metric + " on the dev dump is 0, so retention is " +
                           "undefined; use another --metric or a dev dump the model scores on");
        auto summary_of = [&](const mue::ExitPolicy& p) -> const json& {
          for (const json& s : summaries)
            if (mue::ExitPolicy::from_json(s["policy"]).to_json() == p.to_json()) return s;
          throw mue::Error("internal: a candidate was not run");
        };
        // Keep the best feasible candidate. One with the current layer counts does the same
        // work, so it cannot replace the current choice on timing noise alone.
        Measured now = measured_of(summary_of(current), baseline);
        mue::ExitPolicy best = current;
        Measured best_numbers = now;
        for (const auto& p : candidates) {
          Measured m = measured_of(summary_of(p), baseline);
          bool feasible = m.retention && *m.retention >= dev_target - 1e-12;
          search.push_back({{"round", round},
                            {"stack", stack_name(stack)},
                            {"layer", layer >= 0 ? json(layer + 1) : json(nullptr)},
                            {"policy", p.to_json()},
                            {"name", apps::policy_name(p)},
                            {"feasible", feasible},
                            {"numbers", numbers_json(m)}});
          if (!feasible || apps::same_policy(p, current) ||
              std::abs(m.expected - now.expected) < 1e-12)
            continue;
          double objective = a.objective_measured ? m.measured : m.expected;
          double best_objective =
              a.objective_measured ? best_numbers.measured : best_numbers.expected;
          if (objective > best_objective ||
              (objective == best_objective && m.expected > best_numbers.expected)) {
            best = p;
            best_numbers = m;
          }
        }
        std::cout << "  round " << round << ", " << step_name << ": " << candidates.size()
                  << " candidates -> " << apps::policy_name(best) << " (retention "
                  << apps::fixed(best_numbers.retention.value_or(0), 4) << ", measured "
                  << apps::percent_or_na(best_numbers.measured) << ", expected "
                  << apps::percent_or_na(best_numbers.expected) << ")\n";
        if (!apps::same_policy(best, current)) changed = true;
        current = best;
        current_numbers = best_numbers;
        json chosen = best_numbers.summary;
        chosen["name"] = "calibrated";
        chosen["is_baseline"] = false;
        dev_settings = json::array({baseline, chosen});
      }
      if (!changed) break;
    }

    // The chosen policy, with the dev numbers that chose it.
    json policy = current.to_json();
    policy["comment"] = "written by mue-calibrate: the largest " +
                        std::string(a.objective_measured ? "measured wall-clock" : "expected") +
                        " time reduction on the dev dump with " + a.metric +
                        " retention >= " + apps::short_number(dev_target);
    json calibration = numbers_json(*current_numbers);
    calibration["target_retention"] = a.target;
    calibration["margin"] = a.margin;
    calibration["dev_target_retention"] = dev_target;
    calibration["metric"] = a.metric;
    calibration["objective"] = a.objective_measured ? "measured" : "expected";
    calibration["dev_dump"] = a.dev_dump;
    calibration["dev_samples"] = dev_dump_json["scored"];
    calibration["model"] = model;
    calibration["batch_size"] = a.batch_size;
    calibration["threads"] = threads;
    calibration["compute_type"] = mue::compute_type_name(engine->compute_type());
    calibration["workers"] = options.workers;
    calibration["mpi_ranks"] = cluster.size();
    calibration["rounds"] = rounds_run;
    policy["calibration"] = calibration;
    if (!apps::same_policy(mue::ExitPolicy::from_json(policy, "the calibrated policy"), current))
      throw mue::Error("internal: the written policy does not read back as chosen");
    if (cluster.root()) apps::write_json(a.out, policy);

    std::cout << "\nchosen exit policy (" << a.out << "): " << apps::policy_name(current)
              << "\n\ndev (" << a.dev_dump << ", " << dev_dump_json["scored"]
              << " samples), from the last search step:\n";
    apps::print_table(std::cout, dev_settings, dev.task, a.metric);

    json report = {{"tool", kTool},
                   {"model", apps::model_summary(model, engine->config())},
                   {"task", apps::task_name(dev.task)},
                   {"threads", threads},
                   {"compute_type", mue::compute_type_name(engine->compute_type())},
                   {"workers", options.workers},
                   {"mpi_ranks", cluster.size()},
                   {"batch_size", a.batch_size},
                   {"timing", apps::kTimingNote},
                   {"quality_metric", a.metric},
                   {"target_retention", a.target},
                   {"policy", policy},
                   {"search", search},
                   {"dev", {{"dump", dev_dump_json}, {"settings", dev_settings}}}};
    if (!a.test_dump.empty()) {
      ctx.run_options.label = "mue-calibrate test";
      json test_dump_json;
      json test_settings = run_and_summarize(ctx, test, {{"calibrated", current}}, &test_dump_json);
      apps::report_bad_samples(test_dump_json, kTool);
      std::cout << "\ntest (" << a.test_dump << ", " << test_dump_json["scored"] << " samples):\n";
      apps::print_table(std::cout, test_settings, test.task, a.metric);
      report["test"] = {{"dump", test_dump_json}, {"settings", test_settings}};
      // How far dev overstated the policy: test minus dev, per number.
      Measured on_test = measured_of(test_settings[1], test_settings[0]);
      json gap = json::object();
      if (on_test.retention && current_numbers->retention)
        gap["retention"] = *on_test.retention - *current_numbers->retention;
      gap["expected_time_reduction"] = on_test.expected - current_numbers->expected;
      gap["measured_time_reduction"] = on_test.measured - current_numbers->measured;
      report["dev_test_gap"] = gap;
      std::cout << "\ndev -> test: retention "
                << apps::fixed(current_numbers->retention.value_or(0), 4) << " -> "
                << apps::fixed(on_test.retention.value_or(0), 4) << " (target " << a.target
                << (on_test.retention && *on_test.retention >= a.target - 1e-12 ? ", kept"
                                                                                : ", MISSED")
                << "), expected reduction " << apps::percent_or_na(current_numbers->expected)
                << " -> " << apps::percent_or_na(on_test.expected) << "\n";
    }
    if (cluster.root() && !a.json_out.empty()) apps::write_json(a.json_out, report);
  } catch (const mue::Error& e) {
    std::cerr << kTool << ": " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << kTool << ": unexpected error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
