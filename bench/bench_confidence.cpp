// What the decoder's confidence exit rule costs (issue 21): per intermediate layer it runs the
// final LayerNorm and the output projection on the group's rows. Measured per decoding step of a
// 5-beam search: one decoder layer (a full-depth step divided by the layers), the confidence over
// the whole vocabulary, and over a 64-token shortlist (the cheap variant considered), on the
// default model and on a random-weight OFA-base model (MUE_BENCH_MODEL, default
// build/bench-models/ofa-base-random from tools/bench.sh; skipped if absent). Timing only.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "apps/common/machine.h"
#include "core/arena.h"
#include "model/ofa_model.h"
#include "mue/runtime.h"

namespace {

constexpr int64_t kBeams = 5;
constexpr int64_t kMaxLen = 16;

struct Loaded {
  std::unique_ptr<mue::OfaModel> model;
  mue::EncoderOutput enc;
};

Loaded load(const std::string& dir) {
  Loaded l;
  l.model = mue::OfaModel::load(dir);
  const mue::ModelConfig& c = l.model->config();
  std::mt19937 rng(0);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  mue::Tensor images = mue::Tensor::empty({1, c.image_height, c.image_width, 3});
  for (int64_t i = 0; i < images.numel(); ++i) images.data<float>()[i] = u(rng);
  mue::Tensor src = mue::Tensor::empty({1, 12}, mue::DType::kI64);
  for (int64_t i = 0; i < 12; ++i)
    src.data<int64_t>()[i] = i == 0 ? c.bos_id : i == 11 ? c.eos_id : 10 + i;
  l.enc = l.model->encode(images, src);
  // Warm up (oneDNN builds its kernels on first use).
  mue::DecoderState st = l.model->start_decoding(l.enc, kBeams, kMaxLen);
  for (int i = 0; i < 2; ++i) l.model->decode_step(st, std::vector<int64_t>(kBeams, c.bos_id));
  return l;
}

// One full-depth decoding step of kBeams rows (the state restarts when its cache is full).
void step(benchmark::State& s, const Loaded* l) {
  mue::Arena arena;
  mue::DecoderState st = l->model->start_decoding(l->enc, kBeams, kMaxLen);
  std::vector<int64_t> tokens(kBeams, l->model->config().bos_id);
  for (auto _ : s) {
    if (st.step >= st.max_len) {
      s.PauseTiming();
      st = l->model->start_decoding(l->enc, kBeams, kMaxLen);
      s.ResumeTiming();
    }
    mue::Tensor logits =
        l->model->decode_step(st, tokens, {}, mue::SkippedLayerCache::kPropagate, nullptr, &arena);
    benchmark::DoNotOptimize(logits.raw());
    arena.reset();
  }
  s.counters["layers"] = l->model->num_decoder_layers();
}

// The confidence of kBeams rows after an intermediate layer: over the vocabulary (k = 0) or k
// token rows.
void confidence(benchmark::State& s, const Loaded* l, int64_t k) {
  const mue::ModelConfig& c = l->model->config();
  std::vector<float> states(static_cast<size_t>(kBeams * c.d_model));
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0.f, 1.f);
  for (float& x : states) x = n(rng);
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < k; ++i) ids.push_back((i * 7919) % c.vocab_size);
  mue::Arena arena;
  for (auto _ : s) {
    double v = l->model->answer_confidence(states.data(), kBeams, k ? &ids : nullptr,
                                           mue::ConfidenceMeasure::kTop1, arena);
    benchmark::DoNotOptimize(v);
    arena.reset();
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  {
    const nlohmann::json machine = mue::apps::machine_block(mue::num_threads());
    benchmark::AddCustomContext("mue_machine", machine.dump());
    std::printf("machine: %s\n", mue::apps::machine_line(machine).c_str());
  }
  const std::string root = MUE_SOURCE_DIR;
  std::vector<std::pair<std::string, std::string>> models{
      {"default", root + "/models/mue-scenes-small"}};
  const char* base = std::getenv("MUE_BENCH_MODEL");
  std::string base_dir = base ? base : root + "/build/bench-models/ofa-base-random";
  if (std::filesystem::exists(base_dir + "/config.json")) models.push_back({"base", base_dir});
  std::vector<std::unique_ptr<Loaded>> loaded;
  for (const auto& [name, dir] : models) {
    loaded.push_back(std::make_unique<Loaded>(load(dir)));
    const Loaded* l = loaded.back().get();
    benchmark::RegisterBenchmark((name + "/decode_step_full_depth").c_str(), step, l)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark((name + "/confidence_vocabulary").c_str(), confidence, l, 0)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark((name + "/confidence_shortlist64").c_str(), confidence, l, 64)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
