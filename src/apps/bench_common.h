// Shared by mue-bench and mue-calibrate: reading a dump for either task, building the exit
// settings to compare, running them interleaved on one engine, scoring them against full depth,
// and writing the results as JSON, a table and an SVG plot.
//
// Timing. A sample's wall clock is the time of the engine call that served its batch
// (Engine::caption or Engine::entail, timed with a steady clock) divided by the batch size.
// Image decoding and resizing (Engine::prepare_image) happen once per image before any setting
// runs on it, so they are excluded from every setting alike and reported on their own.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "io/dump.h"
#include "mue/exit_policy.h"
#include "mue/mue.h"
#include "mue/runtime.h"
#include "tasks/metrics.h"

namespace mue::bench {

namespace fs = std::filesystem;
using nlohmann::json;

// ----------------------------------------------------------------------------------------------
// Small parsing helpers (errors are mue::Error naming the flag or field).

inline double parse_double(const std::string& what, const std::string& text) {
  try {
    size_t used = 0;
    double v = std::stod(text, &used);
    if (used != text.size()) throw std::invalid_argument("trailing characters");
    return v;
  } catch (const std::exception&) {
    throw Error(what + " needs a number, got \"" + text + "\"");
  }
}

inline int parse_int(const std::string& what, const std::string& text) {
  try {
    size_t used = 0;
    long v = std::stol(text, &used);
    if (used != text.size()) throw std::invalid_argument("trailing characters");
    if (v < -(1L << 30) || v > (1L << 30)) throw std::out_of_range("too large");
    return static_cast<int>(v);
  } catch (const std::exception&) {
    throw Error(what + " needs an integer, got \"" + text + "\"");
  }
}

inline std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::string part;
  std::stringstream stream(text);
  while (std::getline(stream, part, separator)) parts.push_back(part);
  if (!text.empty() && text.back() == separator) parts.push_back("");
  return parts;
}

// "0.9" rather than "0.900000": settings are named after their values.
inline std::string short_number(double v) {
  std::ostringstream s;
  s << std::setprecision(6) << v;
  return s.str();
}

// ----------------------------------------------------------------------------------------------
// Dumps of either task.

enum class Task { kVe, kCaption };

inline const char* task_name(Task t) { return t == Task::kVe ? "ve" : "caption"; }

inline Task parse_task(const std::string& text) {
  if (text == "ve") return Task::kVe;
  if (text == "caption") return Task::kCaption;
  throw Error("--task must be ve or caption, got \"" + text + "\"");
}

// The task a manifest holds, from its first line that is a JSON object: captioning lines have
// "references", VE lines a "hypothesis" (bench/DUMPS.md).
inline Task infer_task(const fs::path& dump_dir) {
  fs::path manifest = dump_dir / "manifest.jsonl";
  std::ifstream in(manifest);
  if (!in) throw Error("dump " + dump_dir.string() + ": cannot open " + manifest.string());
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) continue;
    if (j.contains("references")) return Task::kCaption;
    if (j.contains("hypothesis")) return Task::kVe;
  }
  throw Error("dump " + dump_dir.string() +
              ": cannot tell the task from the manifest (no line with \"references\" or "
              "\"hypothesis\"); pass --task ve|caption");
}

// One manifest sample of either task.
struct Sample {
  std::string id;
  fs::path image;
  int line = 0;
  std::string premise, hypothesis;  // VE (premise may be empty)
  VeLabel label = VeLabel::kEntailment;
  std::vector<std::string> references;  // captioning
};

// A sample that no setting scores: a bad manifest line, an unreadable image, or text the model
// cannot take. Every setting excludes the same ones.
struct BadSample {
  int line = 0;
  std::string id;  // empty when the line has none that could be read
  std::string kind;
  std::string message;
  json to_json() const {
    return {{"line", line}, {"id", id}, {"kind", kind}, {"message", message}};
  }
};

struct BenchDump {
  fs::path dir;
  Task task = Task::kVe;
  std::vector<Sample> samples;  // good lines, in manifest order
  std::vector<BadSample> bad;   // bad lines, in manifest order
  size_t manifest_entries = 0;  // samples + bad lines considered

  // "<manifest>:<line>", as the dump reader names a line.
  std::string manifest_path_line(int line) const {
    return (dir / "manifest.jsonl").string() + ":" + std::to_string(line);
  }
};

// Reads the dump in collect mode. `limit` > 0 keeps the first `limit` manifest entries (good or
// bad lines alike), so a limited run reports the bad lines it met.
inline BenchDump load_dump(const fs::path& dir, std::optional<Task> task, size_t limit) {
  BenchDump d;
  d.dir = dir;
  d.task = task ? *task : infer_task(dir);
  std::vector<std::pair<int, Sample>> good;
  std::vector<BadLine> bad_lines;
  if (d.task == Task::kVe) {
    Dump<VeSample> ve = read_ve_dump(dir, OnBadLine::kCollect);
    for (VeSample& s : ve.samples) {
      Sample x;
      x.id = s.id;
      x.image = s.image;
      x.line = s.line;
      x.premise = s.premise.value_or("");
      x.hypothesis = s.hypothesis;
      x.label = s.label;
      good.emplace_back(s.line, std::move(x));
    }
    bad_lines = std::move(ve.bad_lines);
  } else {
    Dump<CaptionSample> cap = read_caption_dump(dir, OnBadLine::kCollect);
    for (CaptionSample& s : cap.samples) {
      Sample x;
      x.id = s.id;
      x.image = s.image;
      x.line = s.line;
      x.references = s.references;
      good.emplace_back(s.line, std::move(x));
    }
    bad_lines = std::move(cap.bad_lines);
  }
  // Merge by line number so that --limit counts entries in manifest order.
  size_t g = 0, b = 0;
  while (g < good.size() || b < bad_lines.size()) {
    if (limit > 0 && d.manifest_entries >= limit) break;
    bool take_good =
        b >= bad_lines.size() || (g < good.size() && good[g].first < bad_lines[b].line);
    if (take_good) {
      d.samples.push_back(std::move(good[g++].second));
    } else {
      const BadLine& l = bad_lines[b++];
      d.bad.push_back({l.line, "", bad_line_kind_name(l.kind), l.message});
    }
    ++d.manifest_entries;
  }
  return d;
}

// ----------------------------------------------------------------------------------------------
// Settings: a name and an exit policy.

struct Setting {
  std::string name;
  ExitPolicy policy;
};

inline constexpr const char* kBaselineName = "full_depth";

inline bool same_policy(const ExitPolicy& a, const ExitPolicy& b) {
  return a.to_json() == b.to_json();
}

// Applies one "key:value" of an inline policy (see kSettingHelp) to `j`.
inline void apply_policy_field(json& j, const std::string& key, const std::string& value,
                               const std::string& where) {
  if (key == "image") {
    j["exit_threshold_image"] = parse_double(where + " image", value);
  } else if (key == "text") {
    j["exit_threshold_text"] = parse_double(where + " text", value);
  } else if (key == "decoder") {
    j["exit_threshold_decoder"] = parse_double(where + " decoder", value);
  } else if (key == "schedule") {
    j["decoder_schedule"] = value;
  } else if (key == "kv") {
    j["skipped_layer_cache"] = value;
  } else if (key == "beta") {
    j["calm_beta"] = parse_double(where + " beta", value);
  } else if (key == "tau") {
    j["calm_tau"] = parse_double(where + " tau", value);
  } else if (key == "fixed") {
    std::vector<std::string> parts = split(value, '/');
    if (parts.size() != 3)
      throw Error(where + ": fixed needs three depths I/T/D (0 = off), got \"" + value + "\"");
    j["fixed_depth_image"] = parse_int(where + " fixed image depth", parts[0]);
    j["fixed_depth_text"] = parse_int(where + " fixed text depth", parts[1]);
    j["fixed_depth_decoder"] = parse_int(where + " fixed decoder depth", parts[2]);
  } else {
    throw Error(where + ": unknown key \"" + key +
                "\" (image, text, decoder, schedule, kv, beta, tau, fixed)");
  }
}

inline constexpr const char* kSettingHelp =
    R"(  --setting NAME=FILE.json  an exit policy file (as mue-calibrate writes)
  --setting NAME=SPEC       an inline policy: comma-separated key:value among
                            image:X text:X decoder:X (thresholds in (0, 1]),
                            schedule:static|decaying|calm, kv:propagate|reference,
                            beta:X tau:X (calm schedule), fixed:I/T/D (fixed depths, 0 = off)
                            e.g. --setting paper=image:0.9,text:0.95,decoder:0.95)";

// "NAME=FILE.json" or "NAME=key:value,...".
inline Setting parse_setting(const std::string& arg) {
  size_t eq = arg.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size())
    throw Error("--setting needs NAME=POLICY.json or NAME=key:value,..., got \"" + arg + "\"");
  Setting s;
  s.name = arg.substr(0, eq);
  std::string value = arg.substr(eq + 1);
  std::string where = "--setting " + s.name;
  if (value.find(':') == std::string::npos || fs::exists(value)) {
    s.policy = ExitPolicy::load(value);
    return s;
  }
  json j = json::object();
  for (const std::string& field : split(value, ',')) {
    size_t colon = field.find(':');
    if (colon == std::string::npos) throw Error(where + ": \"" + field + "\" is not key:value");
    apply_policy_field(j, field.substr(0, colon), field.substr(colon + 1), where);
  }
  s.policy = ExitPolicy::from_json(j, where);
  return s;
}

// A setting's name from the values it sets, e.g. "image0.9_text0.95".
inline std::string policy_name(const ExitPolicy& p) {
  ExitPolicy full;
  std::vector<std::string> parts;
  if (p.fixed_depth_image || p.fixed_depth_text || p.fixed_depth_decoder)
    parts.push_back("fixed" + std::to_string(p.fixed_depth_image) + "/" +
                    std::to_string(p.fixed_depth_text) + "/" +
                    std::to_string(p.fixed_depth_decoder));
  if (p.exit_threshold_image != 1.0)
    parts.push_back("image" + short_number(p.exit_threshold_image));
  if (p.exit_threshold_text != 1.0) parts.push_back("text" + short_number(p.exit_threshold_text));
  if (p.exit_threshold_decoder != 1.0)
    parts.push_back("decoder" + short_number(p.exit_threshold_decoder));
  if (p.decoder_schedule != full.decoder_schedule)
    parts.push_back(decoder_schedule_name(p.decoder_schedule));
  if (p.skipped_layer_cache != full.skipped_layer_cache)
    parts.push_back(std::string("kv-") + skipped_layer_cache_name(p.skipped_layer_cache));
  if (p.calm_beta != full.calm_beta) parts.push_back("beta" + short_number(p.calm_beta));
  if (p.calm_tau != full.calm_tau) parts.push_back("tau" + short_number(p.calm_tau));
  if (parts.empty()) return "thresholds1";
  std::string name;
  for (const std::string& part : parts) name += (name.empty() ? "" : "_") + part;
  return name;
}

// --sweep KEY=V1,V2,...: the cross product of every axis, each point a setting.
inline std::vector<Setting> sweep_settings(
    const std::vector<std::pair<std::string, std::vector<std::string>>>& axes) {
  std::vector<json> points{json::object()};
  for (const auto& [key, values] : axes) {
    std::vector<json> next;
    for (const json& point : points)
      for (const std::string& v : values) {
        json p = point;
        apply_policy_field(p, key, v, "--sweep " + key);
        next.push_back(p);
      }
    points = std::move(next);
  }
  std::vector<Setting> out;
  if (axes.empty()) return out;
  for (const json& point : points) {
    ExitPolicy p = ExitPolicy::from_json(point, "--sweep point " + point.dump());
    out.push_back({policy_name(p), p});
  }
  return out;
}

inline std::pair<std::string, std::vector<std::string>> parse_sweep(const std::string& arg) {
  size_t eq = arg.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size())
    throw Error("--sweep needs KEY=V1,V2,..., got \"" + arg + "\"");
  return {arg.substr(0, eq), split(arg.substr(eq + 1), ',')};
}

// Every fixed depth below full, one stack at a time (the others at full depth): the
// accuracy-at-every-depth ablation. VE has one decoder pass, captioning one per token.
inline std::vector<Setting> fixed_depth_settings(int encoder_layers, int decoder_layers) {
  std::vector<Setting> out;
  auto add = [&](const char* stack, int depth, int i, int t, int d) {
    ExitPolicy p;
    p.fixed_depth_image = i;
    p.fixed_depth_text = t;
    p.fixed_depth_decoder = d;
    out.push_back({std::string("fixed_") + stack + "_" + std::to_string(depth), p});
  };
  for (int k = 1; k < encoder_layers; ++k) add("image", k, k, 0, 0);
  for (int k = 1; k < encoder_layers; ++k) add("text", k, 0, k, 0);
  for (int k = 1; k < decoder_layers; ++k) add("decoder", k, 0, 0, k);
  return out;
}

// Full depth first, then the others in order; names must be unique.
inline std::vector<Setting> with_baseline(const std::vector<Setting>& settings) {
  std::vector<Setting> out{{kBaselineName, ExitPolicy::full_depth()}};
  for (const Setting& s : settings) {
    for (const Setting& earlier : out)
      if (earlier.name == s.name) throw Error("two settings are named \"" + s.name + "\"");
    out.push_back(s);
  }
  return out;
}

// ----------------------------------------------------------------------------------------------
// Running the settings interleaved.

// One sample under one setting.
struct Outcome {
  std::string prediction;  // VE label or caption
  std::array<double, 3> probabilities{};
  ExitStatistics exits;
  StageSeconds stages;  // the engine's own split (preprocess excluded from `seconds`)
  double seconds = 0;   // the batch's wall clock divided by its size
};

struct SettingRun {
  Setting setting;
  std::vector<std::optional<Outcome>> outcomes;  // by index into BenchDump::samples
  size_t cache_hits = 0;                         // Engine::image_cache_hits() gained
};

struct RunOptions {
  int batch_size = 1;
  bool warmup = true;
  bool progress = false;  // a progress bar with ETA on stderr
  std::string label = "mue-bench";
};

struct RunResult {
  std::vector<SettingRun> runs;   // in the order of the settings given
  std::vector<bool> scored;       // by sample index: ran under every setting
  std::vector<BadSample> bad;     // found while preparing (unreadable image, bad text)
  size_t distinct_images = 0;     // among scored samples
  double preprocess_seconds = 0;  // prepare_image, once per image
  double run_seconds = 0;         // the whole loop, warm-up included
};

// A bar with ETA on stderr, redrawn at most every 0.2 s.
class Progress {
 public:
  Progress(bool enabled, std::string label, size_t total)
      : enabled_(enabled), label_(std::move(label)), total_(total) {}
  void advance(size_t n) {
    done_ += n;
    if (!enabled_) return;
    double now = elapsed();
    if (done_ < total_ && now - last_draw_ < 0.2) return;
    last_draw_ = now;
    constexpr int kWidth = 30;
    double fraction = total_ ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
    int filled = static_cast<int>(fraction * kWidth);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, '.');
    std::string eta = done_ ? clock(now / static_cast<double>(done_) *
                                    static_cast<double>(total_ - std::min(done_, total_)))
                            : "?";
    std::fprintf(stderr, "\r%s [%s] %zu/%zu sample runs  %s elapsed  ETA %s   ", label_.c_str(),
                 bar.c_str(), done_, total_, clock(now).c_str(), eta.c_str());
    if (done_ >= total_) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  double elapsed() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  static std::string clock(double seconds) {
    long s = std::lround(seconds);
    char text[32];
    std::snprintf(text, sizeof text, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    return text;
  }
  bool enabled_;
  std::string label_;
  size_t total_, done_ = 0;
  double last_draw_ = -1;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

inline bool stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

// Runs every setting on every sample. Samples are grouped by image (a VE dump has several
// hypotheses per image) and cut into chunks of whole images holding at least one batch; each
// chunk runs under every setting in turn, the order rotating from chunk to chunk, so machine
// drift hits every setting alike. The image cache is cleared before each setting's pass over a
// chunk: reuse happens between queries of one image under one setting, never across settings.
inline RunResult run_settings(Engine& engine, const BenchDump& dump,
                              const std::vector<Setting>& settings, const RunOptions& options) {
  using Clock = std::chrono::steady_clock;
  auto since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  Clock::time_point loop_start = Clock::now();
  if (options.batch_size < 1) throw Error("--batch-size must be at least 1");
  const size_t n = dump.samples.size();
  RunResult result;
  result.scored.assign(n, false);
  for (const Setting& s : settings) {
    result.runs.push_back({s, std::vector<std::optional<Outcome>>(n), 0});
    s.policy.validate();
  }

  // Group by image, in order of first appearance.
  std::vector<std::vector<size_t>> groups;
  std::map<fs::path, size_t> group_of;
  for (size_t i = 0; i < n; ++i) {
    auto [it, inserted] = group_of.try_emplace(dump.samples[i].image, groups.size());
    if (inserted) groups.emplace_back();
    groups[it->second].push_back(i);
  }
  std::vector<std::vector<size_t>> chunks;
  for (const auto& g : groups) {
    if (chunks.empty() || chunks.back().size() >= static_cast<size_t>(options.batch_size))
      chunks.emplace_back();
    chunks.back().insert(chunks.back().end(), g.begin(), g.end());
  }

  const ExitPolicy original = engine.exit_policy();
  for (const Setting& s : settings) {  // every setting must fit the model before any time is spent
    try {
      engine.set_exit_policy(s.policy);
    } catch (const Error& e) {
      engine.set_exit_policy(original);
      throw Error("setting " + s.name + ": " + e.what());
    }
  }
  engine.set_exit_policy(original);
  Progress progress(options.progress, options.label, n * settings.size());
  bool warmed_up = !options.warmup;
  for (size_t c = 0; c < chunks.size(); ++c) {
    // Prepare the chunk's images once; a sample whose image or text fails is bad for all.
    std::map<fs::path, std::shared_ptr<PreparedImage>> images;
    std::map<fs::path, std::string> image_error;
    std::vector<size_t> runnable;
    for (size_t i : chunks[c]) {
      const Sample& s = dump.samples[i];
      if (!images.count(s.image) && !image_error.count(s.image)) {
        try {
          Clock::time_point t = Clock::now();
          images[s.image] = std::make_shared<PreparedImage>(engine.prepare_image(s.image.string()));
          result.preprocess_seconds += since(t);
        } catch (const Error& e) {
          image_error[s.image] = e.what();
        }
      }
      if (auto it = image_error.find(s.image); it != image_error.end()) {
        result.bad.push_back({s.line, s.id, "unreadable image",
                              dump.manifest_path_line(s.line) + ": " + it->second});
        continue;
      }
      if (dump.task == Task::kVe) {
        try {
          engine.entailment_prompt(s.premise, s.hypothesis);
        } catch (const Error& e) {
          result.bad.push_back(
              {s.line, s.id, "bad text", dump.manifest_path_line(s.line) + ": " + e.what()});
          continue;
        }
      }
      runnable.push_back(i);
    }
    progress.advance((chunks[c].size() - runnable.size()) * settings.size());
    if (runnable.empty()) continue;
    std::vector<std::vector<size_t>> batches;
    for (size_t k = 0; k < runnable.size(); k += static_cast<size_t>(options.batch_size))
      batches.emplace_back(
          runnable.begin() + static_cast<long>(k),
          runnable.begin() + static_cast<long>(std::min(runnable.size(), k + options.batch_size)));

    // Runs one batch under the engine's current policy; returns its wall clock in seconds.
    auto run_batch = [&](const std::vector<size_t>& batch, SettingRun* record) {
      std::vector<Outcome> out(batch.size());
      Clock::time_point t = Clock::now();
      if (dump.task == Task::kVe) {
        std::vector<EntailmentQuery> queries;
        for (size_t i : batch) {
          const Sample& s = dump.samples[i];
          queries.push_back({images.at(s.image).get(), s.premise, s.hypothesis});
        }
        std::vector<EntailmentResult> r = engine.entail(queries);
        double seconds = since(t);
        for (size_t k = 0; k < batch.size(); ++k) {
          out[k].prediction = r[k].label;
          out[k].probabilities = {r[k].p_entailment, r[k].p_neutral, r[k].p_contradiction};
          out[k].exits = r[k].exits;
          out[k].stages = r[k].seconds;
          out[k].seconds = seconds / static_cast<double>(batch.size());
        }
      } else {
        std::vector<const PreparedImage*> list;
        for (size_t i : batch) list.push_back(images.at(dump.samples[i].image).get());
        std::vector<CaptionResult> r = engine.caption(list);
        double seconds = since(t);
        for (size_t k = 0; k < batch.size(); ++k) {
          out[k].prediction = r[k].caption;
          out[k].exits = r[k].exits;
          out[k].stages = r[k].seconds;
          out[k].seconds = seconds / static_cast<double>(batch.size());
        }
      }
      if (record)
        for (size_t k = 0; k < batch.size(); ++k) record->outcomes[batch[k]] = std::move(out[k]);
    };

    if (!warmed_up) {  // oneDNN builds its primitives on first use: one untimed batch each
      for (const Setting& s : settings) {
        engine.set_exit_policy(s.policy);
        engine.clear_image_cache();
        run_batch(batches.front(), nullptr);
      }
      warmed_up = true;
    }
    for (size_t k = 0; k < settings.size(); ++k) {
      SettingRun& run = result.runs[(c + k) % settings.size()];
      engine.set_exit_policy(run.setting.policy);
      engine.clear_image_cache();
      size_t hits_before = engine.image_cache_hits();
      for (const auto& batch : batches) {
        run_batch(batch, &run);
        progress.advance(batch.size());
      }
      run.cache_hits += engine.image_cache_hits() - hits_before;
    }
    for (size_t i : runnable) result.scored[i] = true;
    result.distinct_images += images.size();
  }
  engine.clear_image_cache();
  engine.set_exit_policy(original);
  std::sort(result.bad.begin(), result.bad.end(),
            [](const BadSample& a, const BadSample& b) { return a.line < b.line; });
  result.run_seconds = since(loop_start);
  return result;
}

// ----------------------------------------------------------------------------------------------
// Scoring and summaries. Quality values are kept as the metrics give them (accuracy in [0, 1],
// CIDEr-D on the toolkit's x10 scale); the table and the plot show them x100.

inline const std::vector<std::string>& quality_metric_names(Task task) {
  static const std::vector<std::string> ve{"accuracy"};
  static const std::vector<std::string> caption{"bleu1", "bleu2",   "bleu3",
                                                "bleu4", "cider_d", "rouge_l"};
  return task == Task::kVe ? ve : caption;
}

inline std::string default_quality_metric(Task task) {
  return task == Task::kVe ? "accuracy" : "cider_d";
}

inline void check_quality_metric(Task task, const std::string& metric) {
  const auto& names = quality_metric_names(task);
  if (std::find(names.begin(), names.end(), metric) == names.end()) {
    std::string known;
    for (const auto& m : names) known += (known.empty() ? "" : ", ") + m;
    throw Error("--metric " + metric + " is not a " + task_name(task) + " metric (" + known + ")");
  }
}

// Nearest-rank percentile (q in [0, 1]) of a non-empty list.
inline double percentile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(values.size())));
  return values[std::clamp<size_t>(rank, 1, values.size()) - 1];
}

inline const SettingRun& baseline_run(const RunResult& result) {
  for (const SettingRun& r : result.runs)
    if (r.setting.name == kBaselineName) return r;
  throw Error("internal: the runs have no full-depth baseline");
}

// The metrics of one setting over the scored samples, by name.
inline std::map<std::string, double> quality_metrics(const BenchDump& dump, const RunResult& result,
                                                     const SettingRun& run) {
  std::map<std::string, double> m;
  if (dump.task == Task::kVe) {
    size_t correct = 0, total = 0;
    for (size_t i = 0; i < dump.samples.size(); ++i) {
      if (!result.scored[i]) continue;
      ++total;
      correct += run.outcomes[i]->prediction == ve_label_name(dump.samples[i].label);
    }
    m["accuracy"] = total ? static_cast<double>(correct) / static_cast<double>(total) : 0.0;
    return m;
  }
  std::vector<std::string> candidates;
  std::vector<std::vector<std::string>> references;
  for (size_t i = 0; i < dump.samples.size(); ++i) {
    if (!result.scored[i]) continue;
    candidates.push_back(run.outcomes[i]->prediction);
    references.push_back(dump.samples[i].references);
  }
  if (candidates.empty())
    return {{"bleu1", 0}, {"bleu2", 0}, {"bleu3", 0}, {"bleu4", 0}, {"cider_d", 0}, {"rouge_l", 0}};
  CaptionScores scores = score_captions(candidates, references);
  for (int k = 0; k < 4; ++k) m["bleu" + std::to_string(k + 1)] = scores.bleu[k];
  m["cider_d"] = scores.cider_d;
  m["rouge_l"] = scores.rouge_l;
  return m;
}

struct SummaryOptions {
  std::string quality_metric;
  bool per_sample = false;
};

// One JSON object per setting (see bench/README.md for the fields).
inline json summarize_settings(const BenchDump& dump, const RunResult& result,
                               const ModelConfig& config, const SummaryOptions& options) {
  const int encoder_depth = config.encoder_layers, decoder_depth = config.decoder_layers;
  const SettingRun& base = baseline_run(result);
  std::map<std::string, double> base_metrics = quality_metrics(dump, result, base);
  std::vector<size_t> scored;
  for (size_t i = 0; i < dump.samples.size(); ++i)
    if (result.scored[i]) scored.push_back(i);
  auto mean_seconds = [&](const SettingRun& run) {
    double sum = 0;
    for (size_t i : scored) sum += run.outcomes[i]->seconds;
    return scored.empty() ? 0.0 : sum / static_cast<double>(scored.size());
  };
  const double base_seconds = mean_seconds(base);

  json out = json::array();
  for (const SettingRun& run : result.runs) {
    json s;
    s["name"] = run.setting.name;
    s["is_baseline"] = run.setting.name == kBaselineName;
    s["policy"] = run.setting.policy.to_json();
    s["samples"] = scored.size();

    std::map<std::string, double> metrics = quality_metrics(dump, result, run);
    json retention = json::object();
    for (const auto& [name, value] : metrics)
      retention[name] = base_metrics[name] > 0 ? json(value / base_metrics[name]) : json(nullptr);
    s["metrics"] = metrics;
    s["retention"] = retention;
    s["quality"] = {{"metric", options.quality_metric},
                    {"value", metrics.at(options.quality_metric)},
                    {"full_depth", base_metrics.at(options.quality_metric)},
                    {"retention", retention[options.quality_metric]}};

    // Exit layers: histograms (index k = k+1 layers), stream means, spec 1.6's reduction with
    // n_E the mean of both streams and n_D averaged over every generated token of the dump.
    std::vector<size_t> image_hist(static_cast<size_t>(encoder_depth)),
        text_hist(static_cast<size_t>(encoder_depth)),
        decoder_hist(static_cast<size_t>(decoder_depth));
    auto count = [&](std::vector<size_t>& hist, int layers, const char* stack, size_t i) {
      if (layers < 1 || layers > static_cast<int>(hist.size()))
        throw Error("setting " + run.setting.name + ", sample " + dump.samples[i].id + ": " +
                    stack + " used " + std::to_string(layers) + " layers, outside 1.." +
                    std::to_string(hist.size()));
      ++hist[static_cast<size_t>(layers - 1)];
    };
    double image_sum = 0, text_sum = 0, decoder_sum = 0, per_sample_reduction = 0;
    size_t decoder_count = 0, agree = 0, reused = 0;
    std::vector<double> seconds;
    StageSeconds stages;
    json per_sample = json::array();
    for (size_t i : scored) {
      const Outcome& o = *run.outcomes[i];
      count(image_hist, o.exits.image_layers, "the image stream", i);
      count(text_hist, o.exits.text_layers, "the text stream", i);
      for (int l : o.exits.decoder_layers) count(decoder_hist, l, "the decoder", i);
      image_sum += o.exits.image_layers;
      text_sum += o.exits.text_layers;
      for (int l : o.exits.decoder_layers) decoder_sum += l;
      decoder_count += o.exits.decoder_layers.size();
      per_sample_reduction += o.exits.expected_time_reduction();
      agree += o.prediction == base.outcomes[i]->prediction;
      reused += o.exits.image_reused;
      seconds.push_back(o.seconds);
      stages.resnet += o.stages.resnet;
      stages.image_stream += o.stages.image_stream;
      stages.text_stream += o.stages.text_stream;
      stages.decoder += o.stages.decoder;
      if (options.per_sample) {
        json r = {{"id", dump.samples[i].id},
                  {"line", dump.samples[i].line},
                  {"prediction", o.prediction},
                  {"layers",
                   {{"image", o.exits.image_layers},
                    {"text", o.exits.text_layers},
                    {"decoder", o.exits.decoder_layers}}},
                  {"image_reused", o.exits.image_reused},
                  {"ms", 1000 * o.seconds}};
        if (dump.task == Task::kVe) {
          r["probabilities"] = {{"entailment", o.probabilities[0]},
                                {"neutral", o.probabilities[1]},
                                {"contradiction", o.probabilities[2]}};
          r["correct"] = o.prediction == ve_label_name(dump.samples[i].label);
        }
        per_sample.push_back(std::move(r));
      }
    }
    const double n = std::max<double>(1.0, static_cast<double>(scored.size()));
    const double mean_image = image_sum / n, mean_text = text_sum / n;
    const double mean_decoder =
        decoder_count ? decoder_sum / static_cast<double>(decoder_count) : 0.0;
    s["agreement_with_full_depth"] = static_cast<double>(agree) / n;
    s["mean_layers"] = {{"image", mean_image}, {"text", mean_text}, {"decoder", mean_decoder}};
    s["expected_time_reduction"] =
        1.0 - (0.5 * (mean_image + mean_text) + mean_decoder) / (encoder_depth + decoder_depth);
    s["expected_time_reduction_per_sample_mean"] = per_sample_reduction / n;
    s["exit_histograms"] = {{"image", image_hist}, {"text", text_hist}, {"decoder", decoder_hist}};
    s["decoder_exits"] = decoder_count;  // generated tokens (captioning) or samples (VE)

    json time = json::object();
    if (!seconds.empty()) {
      double mean = mean_seconds(run);
      time = {{"mean_ms", 1000 * mean},
              {"p50_ms", 1000 * percentile(seconds, 0.5)},
              {"p95_ms", 1000 * percentile(seconds, 0.95)},
              {"measured_time_reduction", base_seconds > 0 ? 1.0 - mean / base_seconds : 0.0},
              {"stages_mean_ms",
               {{"resnet", 1000 * stages.resnet / n},
                {"image_stream", 1000 * stages.image_stream / n},
                {"text_stream", 1000 * stages.text_stream / n},
                {"decoder", 1000 * stages.decoder / n}}}};
    }
    s["time"] = time;
    s["image_reuse"] = {{"reused_samples", reused},
                        {"reused_fraction", static_cast<double>(reused) / n},
                        {"cache_hits", run.cache_hits}};
    if (options.per_sample) s["per_sample"] = std::move(per_sample);
    out.push_back(std::move(s));
  }
  return out;
}

// The parts of a report both apps share: the dump, its samples and the bad ones.
inline json dump_summary(const BenchDump& dump, const RunResult& result) {
  json bad = json::array();
  std::vector<BadSample> all = dump.bad;
  all.insert(all.end(), result.bad.begin(), result.bad.end());
  std::sort(all.begin(), all.end(),
            [](const BadSample& a, const BadSample& b) { return a.line < b.line; });
  std::map<std::string, size_t> by_kind;
  for (const BadSample& b : all) {
    bad.push_back(b.to_json());
    ++by_kind[b.kind];
  }
  size_t scored = static_cast<size_t>(std::count(result.scored.begin(), result.scored.end(), true));
  return {{"dir", dump.dir.string()},
          {"task", task_name(dump.task)},
          {"manifest_entries", dump.manifest_entries},
          {"scored", scored},
          {"bad", all.size()},
          {"bad_by_kind", by_kind},
          {"bad_samples", bad},
          {"distinct_images", result.distinct_images},
          {"preprocess_ms_mean_per_image",
           result.distinct_images
               ? 1000 * result.preprocess_seconds / static_cast<double>(result.distinct_images)
               : 0.0}};
}

// "3 bad samples (2 missing image, 1 bad JSON)" and one line each, on stderr.
inline void report_bad_samples(const json& dump_json, const std::string& tool) {
  size_t bad = dump_json["bad"].get<size_t>();
  if (bad == 0) return;
  std::string kinds;
  for (const auto& [kind, count] : dump_json["bad_by_kind"].items())
    kinds += (kinds.empty() ? "" : ", ") + std::to_string(count.get<size_t>()) + " " + kind;
  std::cerr << tool << ": " << bad << " bad sample" << (bad == 1 ? "" : "s") << " in "
            << dump_json["dir"].get<std::string>() << " (" << kinds
            << "), excluded from every setting's scores:\n";
  for (const json& b : dump_json["bad_samples"])
    std::cerr << "  " << b["message"].get<std::string>() << "\n";
}

inline json model_summary(const std::string& dir, const ModelConfig& c) {
  return {{"dir", dir},
          {"name", c.name},
          {"encoder_mode", encoder_mode_name(c.encoder_mode)},
          {"encoder_layers", c.encoder_layers},
          {"decoder_layers", c.decoder_layers},
          {"d_model", c.d_model},
          {"image_size", {c.image_height, c.image_width}}};
}

inline constexpr const char* kTimingNote =
    "per-sample wall clock = the engine call for a batch (Engine::caption / Engine::entail, "
    "steady clock) divided by the batch size; image decoding and resizing (prepare_image) run "
    "once per image before the settings and are excluded; the first batch ran once untimed "
    "under every setting; settings are interleaved per chunk of whole images with rotating "
    "order; the image cache is cleared before each setting's pass over a chunk";

// ----------------------------------------------------------------------------------------------
// Text table and SVG plot.

inline std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

inline std::string percent_or_na(const json& v, int digits = 1) {
  return v.is_number() ? fixed(100 * v.get<double>(), digits) + "%" : "n/a";
}

inline std::string metric_label(const std::string& metric) {
  static const std::map<std::string, std::string> labels{
      {"accuracy", "acc%"}, {"bleu1", "B1"},        {"bleu2", "B2"},       {"bleu3", "B3"},
      {"bleu4", "B4"},      {"cider_d", "CIDEr-D"}, {"rouge_l", "ROUGE-L"}};
  auto it = labels.find(metric);
  return it == labels.end() ? metric : it->second;
}

// The readable table: one row per setting, then the exit-layer histograms.
inline void print_table(std::ostream& out, const json& settings, Task task,
                        const std::string& quality_metric) {
  size_t name_width = 8;
  for (const json& s : settings)
    name_width = std::max(name_width, s["name"].get<std::string>().size());
  auto cell = [&](const std::string& text, int width) {
    std::ostringstream c;
    c << std::setw(width) << text;
    return c.str();
  };
  std::ostringstream head;
  head << std::left << std::setw(static_cast<int>(name_width)) << "setting" << std::right;
  for (const std::string& m : quality_metric_names(task)) head << cell(metric_label(m), 9);
  head << cell("retain", 8) << cell("agree", 8) << cell("exp.red", 9) << cell("ms/sample", 11)
       << cell("p50", 9) << cell("p95", 9) << cell("meas.red", 10) << cell("layers i/t/d", 17)
       << cell("reuse", 7);
  out << head.str() << "\n" << std::string(head.str().size(), '-') << "\n";
  for (const json& s : settings) {
    out << std::left << std::setw(static_cast<int>(name_width)) << s["name"].get<std::string>()
        << std::right;
    for (const std::string& m : quality_metric_names(task))
      out << cell(fixed(100 * s["metrics"][m].get<double>(), 1), 9);
    const json& r = s["quality"]["retention"];
    out << cell(r.is_number() ? fixed(r.get<double>(), 3) : "n/a", 8)
        << cell(percent_or_na(s["agreement_with_full_depth"], 0), 8)
        << cell(percent_or_na(s["expected_time_reduction"]), 9);
    const json& t = s["time"];
    if (t.contains("mean_ms")) {
      out << cell(fixed(t["mean_ms"].get<double>(), 1), 11)
          << cell(fixed(t["p50_ms"].get<double>(), 1), 9)
          << cell(fixed(t["p95_ms"].get<double>(), 1), 9)
          << cell(percent_or_na(t["measured_time_reduction"]), 10);
    } else {
      out << cell("-", 11) << cell("-", 9) << cell("-", 9) << cell("-", 10);
    }
    const json& l = s["mean_layers"];
    out << cell(fixed(l["image"].get<double>(), 2) + "/" + fixed(l["text"].get<double>(), 2) + "/" +
                    fixed(l["decoder"].get<double>(), 2),
                17)
        << cell(percent_or_na(s["image_reuse"]["reused_fraction"], 0), 7) << "\n";
  }
  out << "quality metric: " << quality_metric
      << " (retain = its ratio to full depth); metrics x100; exp.red = spec 1.6's expected time "
         "reduction from layer counts; meas.red = measured wall-clock reduction against full "
         "depth; reuse = samples whose image stream came from the cache\n";
  out << "exit layers (samples per layer 1..N; decoder: per generated token for captioning):\n";
  for (const json& s : settings) {
    auto hist = [](const json& h) {
      std::string text = "[";
      for (const json& c : h) {
        if (text.size() > 1) text += ' ';
        text += std::to_string(c.get<size_t>());
      }
      return text + ']';
    };
    out << "  " << std::left << std::setw(static_cast<int>(name_width))
        << s["name"].get<std::string>() << std::right << "  image "
        << hist(s["exit_histograms"]["image"]) << "  text " << hist(s["exit_histograms"]["text"])
        << "  decoder " << hist(s["exit_histograms"]["decoder"]) << "\n";
  }
}

inline std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// Tick positions at 1, 2 or 5 times a power of ten covering [lo, hi].
inline std::vector<double> nice_ticks(double lo, double hi, int target = 6) {
  double span = std::max(hi - lo, 1e-12);
  double raw = span / target, power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = power;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * power >= raw) {
      step = m * power;
      break;
    }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step) * step; t <= hi + 1e-9 * span; t += step)
    ticks.push_back(std::abs(t) < 1e-12 * step ? 0.0 : t);
  return ticks;
}

enum class PlotX { kMeasuredReduction, kMeanMs };

// Quality (y) against time (x): one labelled point per setting, full depth in another colour.
inline void write_svg(const fs::path& path, const json& settings, const std::string& quality_metric,
                      PlotX x_axis, const std::string& title) {
  struct Point {
    double x, y;
    std::string name;
    bool baseline;
  };
  std::vector<Point> points;
  for (const json& s : settings) {
    const json& t = s["time"];
    if (!t.contains("mean_ms")) continue;
    double x = x_axis == PlotX::kMeanMs ? t["mean_ms"].get<double>()
                                        : 100 * t["measured_time_reduction"].get<double>();
    points.push_back({x, 100 * s["metrics"][quality_metric].get<double>(),
                      s["name"].get<std::string>(), s["is_baseline"].get<bool>()});
  }
  if (points.empty()) throw Error("no timed setting to plot in " + path.string());
  double x_lo = points[0].x, x_hi = x_lo, y_lo = points[0].y, y_hi = y_lo;
  for (const Point& p : points) {
    x_lo = std::min(x_lo, p.x), x_hi = std::max(x_hi, p.x);
    y_lo = std::min(y_lo, p.y), y_hi = std::max(y_hi, p.y);
  }
  auto pad = [](double& lo, double& hi) {
    double margin = std::max((hi - lo) * 0.08, std::max(std::abs(hi), 1.0) * 0.02);
    lo -= margin, hi += margin;
  };
  pad(x_lo, x_hi);
  pad(y_lo, y_hi);
  constexpr double kWidth = 760, kHeight = 500, kLeft = 80, kRight = 40, kTop = 50, kBottom = 60;
  auto sx = [&](double x) {
    return kLeft + (x - x_lo) / (x_hi - x_lo) * (kWidth - kLeft - kRight);
  };
  auto sy = [&](double y) {
    return kHeight - kBottom - (y - y_lo) / (y_hi - y_lo) * (kHeight - kTop - kBottom);
  };
  std::ofstream out(path);
  if (!out) throw Error("cannot write the plot " + path.string());
  out << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
      << "\" viewBox=\"0 0 " << kWidth << " " << kHeight
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << kWidth / 2 << "\" y=\"28\" text-anchor=\"middle\" font-size=\"15\">"
      << xml_escape(title) << "</text>\n";
  out << std::fixed << std::setprecision(2);
  for (double t : nice_ticks(x_lo, x_hi)) {
    out << "<line x1=\"" << sx(t) << "\" y1=\"" << kTop << "\" x2=\"" << sx(t) << "\" y2=\""
        << kHeight - kBottom << "\" stroke=\"#e4e4e4\"/>\n"
        << "<text x=\"" << sx(t) << "\" y=\"" << kHeight - kBottom + 18
        << "\" text-anchor=\"middle\">" << short_number(t) << "</text>\n";
  }
  for (double t : nice_ticks(y_lo, y_hi)) {
    out << "<line x1=\"" << kLeft << "\" y1=\"" << sy(t) << "\" x2=\"" << kWidth - kRight
        << "\" y2=\"" << sy(t) << "\" stroke=\"#e4e4e4\"/>\n"
        << "<text x=\"" << kLeft - 8 << "\" y=\"" << sy(t) + 4 << "\" text-anchor=\"end\">"
        << short_number(t) << "</text>\n";
  }
  out << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << kWidth - kLeft - kRight
      << "\" height=\"" << kHeight - kTop - kBottom << "\" fill=\"none\" stroke=\"black\"/>\n";
  std::string x_label = x_axis == PlotX::kMeanMs
                            ? "wall clock per sample (ms, mean)"
                            : "measured wall-clock reduction against full depth (%)";
  out << "<text x=\"" << (kLeft + kWidth - kRight) / 2 << "\" y=\"" << kHeight - 18
      << "\" text-anchor=\"middle\">" << x_label << "</text>\n"
      << "<text transform=\"translate(22," << (kTop + kHeight - kBottom) / 2
      << ") rotate(-90)\" text-anchor=\"middle\">"
      << (quality_metric == "accuracy" ? std::string("accuracy (%)")
                                       : xml_escape(metric_label(quality_metric)) + " (x100)")
      << "</text>\n";
  for (const Point& p : points) {
    const char* colour = p.baseline ? "#d62728" : "#1f77b4";
    const bool left_half = sx(p.x) < kWidth / 2;  // labels point inwards, never off the edge
    out << "<circle cx=\"" << sx(p.x) << "\" cy=\"" << sy(p.y) << "\" r=\"4.5\" fill=\"" << colour
        << "\"><title>" << xml_escape(p.name) << ": " << short_number(p.x) << ", "
        << short_number(p.y) << "</title></circle>\n"
        << "<text x=\"" << (left_half ? sx(p.x) + 7 : sx(p.x) - 7) << "\" y=\"" << sy(p.y) - 6
        << "\" text-anchor=\"" << (left_half ? "start" : "end") << "\" fill=\"" << colour
        << "\" font-size=\"10\">" << xml_escape(p.name) << "</text>\n";
  }
  out << "</svg>\n";
  if (!out) throw Error("error writing the plot " + path.string());
}

inline void write_json(const fs::path& path, const json& j) {
  std::ofstream out(path);
  if (!out) throw Error("cannot write " + path.string());
  out << j.dump(2) << "\n";
  if (!out) throw Error("error writing " + path.string());
}

}  // namespace mue::bench
