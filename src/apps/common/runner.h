// Running exit settings on a dump, interleaved, on one engine or one per compute type (mue-bench,
// mue-calibrate).
//
// Timing. A sample's wall clock is the time of the engine call that served its batch
// (Engine::caption or Engine::entail, timed with a steady clock) divided by the batch size.
// Image decoding and resizing (Engine::prepare_image) happen once per image before any setting
// runs on it, so they are excluded from every setting alike and reported on their own.
#pragma once

#include <array>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "apps/common/bench_dump.h"
#include "apps/common/settings.h"
#include "mue/mue.h"

namespace mue::apps {

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
  size_t cache_hits = 0;                         // image-cache hits during this setting's passes
};

struct RunOptions {
  int batch_size = 1;
  bool warmup = true;
  bool progress = false;  // a progress bar with ETA on stderr
  std::string label = "mue-bench";
  // Per-call options every setting shares (the generation settings); each setting brings its
  // own exit policy.
  CallOptions call;
  // The engines of settings with a compute type (Setting::compute_type, `auto` resolved) other
  // than the main engine's; images are prepared by the main engine and shared.
  std::map<ComputeType, const Engine*> engines;
};

struct RunResult {
  std::vector<SettingRun> runs;   // in the order of the settings given
  std::vector<bool> scored;       // by sample index: ran under every setting
  std::vector<BadSample> bad;     // found while preparing (unreadable image, bad text)
  size_t distinct_images = 0;     // among scored samples
  double preprocess_seconds = 0;  // prepare_image, once per image
  double run_seconds = 0;         // the whole loop, warm-up included
};

bool stderr_is_terminal();

// Runs every setting on every sample. Samples are grouped by image (a VE dump has several
// hypotheses per image) and cut into chunks of whole images holding at least one batch; each
// chunk runs under every setting in turn, the order rotating from chunk to chunk, so machine
// drift hits every setting alike. The image cache is cleared before each setting's pass over a
// chunk: reuse happens between queries of one image under one setting, never across settings.
// Every setting's policy is checked against the model before any time is spent.
RunResult run_settings(const Engine& engine, const BenchDump& dump,
                       const std::vector<Setting>& settings, const RunOptions& options);

}  // namespace mue::apps
