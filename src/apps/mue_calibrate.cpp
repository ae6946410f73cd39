// mue-calibrate: finds the exit thresholds (image, text, decoder) that cut the most measured wall
// clock on a dev dump while keeping quality retention against full depth at or above a target,
// writes that exit policy as JSON (the library and the CLI load it), and reports it on a test
// dump.
//
//   mue-calibrate --dev-dump DIR --out POLICY.json [--test-dump DIR] [--target 0.99] [options]
#include <cstdlib>
#include <iostream>

#include "apps/bench_common.h"

namespace {

namespace bench = mue::bench;
using bench::json;

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
  --schedules LIST          decoder schedules to search with the decoder threshold
                            (static, decaying, calm; default: static only)
  --kv propagate|reference  skipped decoder layers' cache (default propagate)
  --rounds N                at most N rounds over the stacks (default 2)
  --task ve|caption         default: inferred from the manifests
  --model DIR               model directory (default: $MUE_MODEL, else the embedded model)
  --threads N, --batch-size N, --beam N, --max-len N   as for mue-bench
  --limit N, --test-limit N only the first N manifest entries of the dev / test dump
  --no-warmup, --no-progress
)";

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "mue-calibrate: " << message << "\n(mue-calibrate --help for usage)\n";
  std::exit(2);
}

std::string default_model_dir() {
  if (const char* env = std::getenv("MUE_MODEL")) return env;
  return MUE_DEFAULT_MODEL;
}

enum class Stack { kImage, kText, kDecoder };

const char* stack_name(Stack s) {
  return s == Stack::kImage ? "image" : s == Stack::kText ? "text" : "decoder";
}

std::vector<double> parse_grid(const std::string& flag, const std::string& text) {
  std::vector<double> grid;
  for (const std::string& v : bench::split(text, ',')) {
    double x = bench::parse_double(flag, v);
    if (!(x > 0 && x <= 1)) throw mue::Error(flag + ": threshold " + v + " is outside (0, 1]");
    grid.push_back(x);
  }
  if (grid.empty()) throw mue::Error(flag + " is empty");
  return grid;
}

struct Args {
  std::string dev_dump, test_dump, out, json_out, model = default_model_dir(), metric;
  std::optional<bench::Task> task;
  double target = 0.99;
  bool objective_measured = true, warmup = true, progress = true;
  std::map<Stack, std::vector<double>> grids;
  std::vector<Stack> stacks{Stack::kImage, Stack::kText, Stack::kDecoder};
  std::vector<mue::DecoderSchedule> schedules{mue::DecoderSchedule::kStatic};
  mue::SkippedLayerCache kv = mue::SkippedLayerCache::kPropagate;
  int rounds = 2, threads = 0, batch_size = 1, beam = 0, max_len = 0;
  size_t limit = 0, test_limit = 0;
};

Args parse(int argc, char** argv) {
  Args a;
  std::vector<double> grid = {0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99, 1.0};
  std::map<Stack, std::vector<double>> own;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(arg + " needs a value");
      return argv[++i];
    };
    auto positive = [&](const std::string& text) {
      int v = bench::parse_int(arg, text);
      if (v < 1) throw mue::Error(arg + " must be at least 1, got " + text);
      return v;
    };
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else if (arg == "--dev-dump") {
      a.dev_dump = value();
    } else if (arg == "--test-dump") {
      a.test_dump = value();
    } else if (arg == "--out") {
      a.out = value();
    } else if (arg == "--json") {
      a.json_out = value();
    } else if (arg == "--model") {
      a.model = value();
    } else if (arg == "--task") {
      a.task = bench::parse_task(value());
    } else if (arg == "--metric") {
      a.metric = value();
    } else if (arg == "--target") {
      a.target = bench::parse_double(arg, value());
      if (!(a.target > 0 && a.target <= 1.5))
        throw mue::Error("--target must be a retention ratio such as 0.99");
    } else if (arg == "--objective") {
      std::string v = value();
      if (v != "measured" && v != "expected")
        throw mue::Error("--objective must be measured or expected, got \"" + v + "\"");
      a.objective_measured = v == "measured";
    } else if (arg == "--grid") {
      grid = parse_grid(arg, value());
    } else if (arg == "--image-grid") {
      own[Stack::kImage] = parse_grid(arg, value());
    } else if (arg == "--text-grid") {
      own[Stack::kText] = parse_grid(arg, value());
    } else if (arg == "--decoder-grid") {
      own[Stack::kDecoder] = parse_grid(arg, value());
    } else if (arg == "--stacks") {
      a.stacks.clear();
      for (const std::string& s : bench::split(value(), ',')) {
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
    } else if (arg == "--schedules") {
      a.schedules.clear();
      for (const std::string& s : bench::split(value(), ',')) {
        json j = {{"decoder_schedule", s}};
        a.schedules.push_back(mue::ExitPolicy::from_json(j, "--schedules").decoder_schedule);
      }
      if (a.schedules.empty()) throw mue::Error("--schedules is empty");
    } else if (arg == "--kv") {
      json j = {{"skipped_layer_cache", value()}};
      a.kv = mue::ExitPolicy::from_json(j, "--kv").skipped_layer_cache;
    } else if (arg == "--rounds") {
      a.rounds = positive(value());
    } else if (arg == "--threads") {
      a.threads = positive(value());
    } else if (arg == "--batch-size") {
      a.batch_size = positive(value());
    } else if (arg == "--beam") {
      a.beam = positive(value());
    } else if (arg == "--max-len") {
      a.max_len = positive(value());
    } else if (arg == "--limit") {
      a.limit = static_cast<size_t>(positive(value()));
    } else if (arg == "--test-limit") {
      a.test_limit = static_cast<size_t>(positive(value()));
    } else if (arg == "--no-warmup") {
      a.warmup = false;
    } else if (arg == "--no-progress") {
      a.progress = false;
    } else {
      usage_error("unexpected argument \"" + arg + "\"");
    }
  }
  if (a.dev_dump.empty()) usage_error("--dev-dump DIR is required");
  if (a.out.empty()) usage_error("--out POLICY.json is required");
  for (Stack s : {Stack::kImage, Stack::kText, Stack::kDecoder})
    a.grids[s] = own.count(s) ? own[s] : grid;
  return a;
}

mue::ExitPolicy with_stack(mue::ExitPolicy p, Stack stack, double threshold) {
  if (stack == Stack::kImage) p.exit_threshold_image = threshold;
  if (stack == Stack::kText) p.exit_threshold_text = threshold;
  if (stack == Stack::kDecoder) p.exit_threshold_decoder = threshold;
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
  mue::Engine* engine = nullptr;
  bench::RunOptions run_options;
  std::string metric;
};

// Runs `settings` (full depth added first) on a dump; returns the summaries in that order.
json run_and_summarize(Context& ctx, const bench::BenchDump& dump,
                       const std::vector<bench::Setting>& settings, json* dump_json) {
  bench::RunResult result =
      bench::run_settings(*ctx.engine, dump, bench::with_baseline(settings), ctx.run_options);
  *dump_json = bench::dump_summary(dump, result);
  if ((*dump_json)["scored"].get<size_t>() == 0)
    throw mue::Error("no sample of " + dump.dir.string() + " could be run");
  return bench::summarize_settings(dump, result, ctx.engine->config(), {ctx.metric, false});
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  bench::BenchDump dev, test;
  try {
    a = parse(argc, argv);
    for (const std::string& d : {a.dev_dump, a.test_dump})
      if (!d.empty() && !std::filesystem::is_directory(d))
        throw mue::Error("dump directory " + d + " does not exist");
    dev = bench::load_dump(a.dev_dump, a.task, a.limit);
    if (!a.test_dump.empty()) {
      test = bench::load_dump(a.test_dump, a.task ? a.task : std::optional(dev.task), a.test_limit);
      if (test.task != dev.task) throw mue::Error("the dev and test dumps hold different tasks");
    }
    if (a.metric.empty()) a.metric = bench::default_quality_metric(dev.task);
    bench::check_quality_metric(dev.task, a.metric);
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
    Context ctx;
    ctx.engine = engine.get();
    ctx.metric = a.metric;
    ctx.run_options.batch_size = a.batch_size;
    ctx.run_options.warmup = a.warmup;
    ctx.run_options.progress = a.progress && bench::stderr_is_terminal();

    // VE runs the decoder once with the static threshold (spec 1.4): schedules do not apply.
    if (dev.task == bench::Task::kVe) a.schedules = {mue::DecoderSchedule::kStatic};
    mue::ExitPolicy current;
    current.skipped_layer_cache = a.kv;
    current.decoder_schedule = a.schedules.front();
    std::optional<Measured> current_numbers;
    json search = json::array(), dev_dump_json, dev_settings;
    bool bad_reported = false;
    int rounds_run = 0;
    std::cout << "mue-calibrate: " << a.dev_dump << " (" << bench::task_name(dev.task) << "), "
              << a.metric << " retention >= " << a.target << ", objective "
              << (a.objective_measured ? "measured wall-clock" : "expected (layer-count)")
              << " time reduction\n";

    for (int round = 1; round <= a.rounds; ++round) {
      ++rounds_run;
      bool changed = false;
      for (Stack stack : a.stacks) {
        // Candidates: the stack's grid (and schedules), with the current choice among them.
        std::vector<mue::ExitPolicy> candidates{current};
        for (double v : a.grids[stack]) {
          std::vector<mue::DecoderSchedule> schedules{current.decoder_schedule};
          if (stack == Stack::kDecoder) schedules = a.schedules;
          for (mue::DecoderSchedule s : schedules) {
            mue::ExitPolicy p = with_stack(current, stack, v);
            p.decoder_schedule = s;
            bool seen = false;
            for (const auto& c : candidates) seen = seen || bench::same_policy(c, p);
            if (!seen) candidates.push_back(p);
          }
        }
        std::vector<bench::Setting> settings;
        for (const auto& p : candidates)
          if (!bench::same_policy(p, mue::ExitPolicy::full_depth()))
            settings.push_back({bench::policy_name(p), p});
        ctx.run_options.label =
            "mue-calibrate round " + std::to_string(round) + " " + stack_name(stack);
        json summaries = run_and_summarize(ctx, dev, settings, &dev_dump_json);
        if (!bad_reported) {
          bench::report_bad_samples(dev_dump_json, "mue-calibrate");
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
          bool feasible = m.retention && *m.retention >= a.target - 1e-12;
          search.push_back({{"round", round},
                            {"stack", stack_name(stack)},
                            {"policy", p.to_json()},
                            {"name", bench::policy_name(p)},
                            {"feasible", feasible},
                            {"numbers", numbers_json(m)}});
          if (!feasible || bench::same_policy(p, current) ||
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
        std::cout << "  round " << round << ", " << stack_name(stack) << ": " << candidates.size()
                  << " candidates -> " << bench::policy_name(best) << " (retention "
                  << bench::fixed(best_numbers.retention.value_or(0), 4) << ", measured "
                  << bench::percent_or_na(best_numbers.measured) << ", expected "
                  << bench::percent_or_na(best_numbers.expected) << ")\n";
        if (!bench::same_policy(best, current)) changed = true;
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
                        " retention >= " + bench::short_number(a.target);
    json calibration = numbers_json(*current_numbers);
    calibration["target_retention"] = a.target;
    calibration["metric"] = a.metric;
    calibration["objective"] = a.objective_measured ? "measured" : "expected";
    calibration["dev_dump"] = a.dev_dump;
    calibration["dev_samples"] = dev_dump_json["scored"];
    calibration["model"] = a.model;
    calibration["batch_size"] = a.batch_size;
    calibration["threads"] = mue::num_threads();
    calibration["rounds"] = rounds_run;
    policy["calibration"] = calibration;
    if (!bench::same_policy(mue::ExitPolicy::from_json(policy, "the calibrated policy"), current))
      throw mue::Error("internal: the written policy does not read back as chosen");
    bench::write_json(a.out, policy);

    std::cout << "\nchosen exit policy (" << a.out << "): " << bench::policy_name(current)
              << "\n\ndev (" << a.dev_dump << ", " << dev_dump_json["scored"]
              << " samples), from the last search step:\n";
    bench::print_table(std::cout, dev_settings, dev.task, a.metric);

    json report = {{"tool", "mue-calibrate"},
                   {"model", bench::model_summary(a.model, engine->config())},
                   {"task", bench::task_name(dev.task)},
                   {"threads", mue::num_threads()},
                   {"batch_size", a.batch_size},
                   {"timing", bench::kTimingNote},
                   {"quality_metric", a.metric},
                   {"target_retention", a.target},
                   {"policy", policy},
                   {"search", search},
                   {"dev", {{"dump", dev_dump_json}, {"settings", dev_settings}}}};
    if (!a.test_dump.empty()) {
      ctx.run_options.label = "mue-calibrate test";
      json test_dump_json;
      json test_settings = run_and_summarize(ctx, test, {{"calibrated", current}}, &test_dump_json);
      bench::report_bad_samples(test_dump_json, "mue-calibrate");
      std::cout << "\ntest (" << a.test_dump << ", " << test_dump_json["scored"] << " samples):\n";
      bench::print_table(std::cout, test_settings, test.task, a.metric);
      report["test"] = {{"dump", test_dump_json}, {"settings", test_settings}};
    }
    if (!a.json_out.empty()) bench::write_json(a.json_out, report);
  } catch (const mue::Error& e) {
    std::cerr << "mue-calibrate: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "mue-calibrate: unexpected error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
