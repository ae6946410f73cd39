#include "apps/common/runner.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>

#include "apps/common/shards.h"

namespace mue::apps {

namespace {

namespace fs = std::filesystem;

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

}  // namespace

bool stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

RunResult run_settings(const Engine& engine, const BenchDump& dump,
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
  for (const Setting& s : settings)
    result.runs.push_back({s, std::vector<std::optional<Outcome>>(n), 0});

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

  // The engine each setting runs on: the main one, or the one of its compute type.
  std::vector<const Engine*> engine_of;
  for (const Setting& s : settings) {
    ComputeType type = resolve_compute_type(s.compute_type.value_or(engine.compute_type()));
    auto it = options.engines.find(type);
    if (type != engine.compute_type() && it == options.engines.end())
      throw Error("setting " + s.name + " asks for compute type " + compute_type_name(type) +
                  ", and no engine of that type was loaded");
    engine_of.push_back(type == engine.compute_type() ? &engine : it->second);
  }
  auto clear_image_caches = [&] {
    engine.clear_image_cache();
    for (const auto& [type, e] : options.engines) e->clear_image_cache();
  };
  for (const Setting& s : settings) {  // every setting must fit the model before any time is spent
    try {
      engine.check_exit_policy(s.policy);
    } catch (const Error& e) {
      throw Error("setting " + s.name + ": " + e.what());
    }
  }
  Progress progress(options.progress, options.label, n * settings.size());
  bool warmed_up = !options.warmup;
  for (size_t c = 0; c < chunks.size(); ++c) {
    if (!rank_runs_chunk(c)) continue;  // another MPI rank runs it (apps/common/shards.h)
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

    // Runs one batch under `policy`, recording its outcomes in `record` (if any).
    auto run_batch = [&](const Engine& target, const std::vector<size_t>& batch,
                         const ExitPolicy& policy, SettingRun* record) {
      CallOptions call = options.call;
      call.exit_policy = policy;
      std::vector<Outcome> out(batch.size());
      Clock::time_point t = Clock::now();
      if (dump.task == Task::kVe) {
        std::vector<EntailmentQuery> queries;
        for (size_t i : batch) {
          const Sample& s = dump.samples[i];
          queries.push_back({images.at(s.image).get(), s.premise, s.hypothesis});
        }
        std::vector<EntailmentResult> r = target.entail(queries, call);
        double seconds = since(t);
        for (size_t k = 0; k < batch.size(); ++k) {
          out[k].prediction = r[k].label_name();
          out[k].probabilities = {r[k].p_entailment, r[k].p_neutral, r[k].p_contradiction};
          out[k].exits = r[k].exits;
          out[k].stages = r[k].seconds;
          out[k].seconds = seconds / static_cast<double>(batch.size());
        }
      } else {
        std::vector<const PreparedImage*> list;
        for (size_t i : batch) list.push_back(images.at(dump.samples[i].image).get());
        std::vector<CaptionResult> r = target.caption(list, call);
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
      for (size_t k = 0; k < settings.size(); ++k) {
        clear_image_caches();
        run_batch(*engine_of[k], batches.front(), settings[k].policy, nullptr);
      }
      warmed_up = true;
    }
    for (size_t k = 0; k < settings.size(); ++k) {
      const size_t index = (c + k) % settings.size();
      SettingRun& run = result.runs[index];
      const Engine& setting_engine = *engine_of[index];
      clear_image_caches();
      const size_t hits_before = setting_engine.image_cache_stats().hits;
      for (const auto& batch : batches) {
        run_batch(setting_engine, batch, run.setting.policy, &run);
        progress.advance(batch.size());
      }
      run.cache_hits += setting_engine.image_cache_stats().hits - hits_before;
    }
    for (size_t i : runnable) result.scored[i] = true;
    result.distinct_images += images.size();
  }
  clear_image_caches();
  std::sort(result.bad.begin(), result.bad.end(),
            [](const BadSample& a, const BadSample& b) { return a.line < b.line; });
  result.run_seconds = since(loop_start);
  merge_shards(result);
  return result;
}

}  // namespace mue::apps
