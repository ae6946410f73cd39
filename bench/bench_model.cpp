// Model-level benchmarks at OFA-base shapes (spec 3.1): one encoder layer at 900 tokens, the
// ResNet-101 stages 1-3 at 480x480, the full-depth encoder, and (issue 3) captioning and
// entailment at full depth against exits forced at the paper's average depths.
//
// The layer and ResNet benchmarks make their own random weights. The model-level ones need a
// random-weight OFA-base model directory with a tokenizer: MUE_BENCH_MODEL, made by
// tools/bench.sh. Timing only; nothing here asserts.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "apps/common/machine.h"
#include "layers/resnet.h"
#include "layers/transformer.h"
#include "model/ofa_model.h"
#include "mue/mue.h"
#include "mue/runtime.h"
#include "synthetic_weights.h"

namespace {

using Params = std::vector<std::pair<std::string, mue::Shape>>;

std::shared_ptr<mue::SafeTensorsFile> synthetic_file(const std::string& name,
                                                     const Params& params) {
  auto path = std::filesystem::temp_directory_path() / ("mue_bench_" + name + ".safetensors");
  mue::testing::write_synthetic_model(path.string(), params, 1);
  return mue::SafeTensorsFile::open(path.string());
}

void add_linear(Params& p, const std::string& prefix, int64_t out, int64_t in) {
  p.push_back({prefix + ".weight", {out, in}});
  p.push_back({prefix + ".bias", {out}});
}

void add_norm(Params& p, const std::string& prefix, int64_t dim) {
  p.push_back({prefix + ".weight", {dim}});
  p.push_back({prefix + ".bias", {dim}});
}

constexpr int64_t kD = 768, kHeads = 12, kFfn = 3072;

// Args: tokens; compute type (0 f32, 1 bf16, 2 int8), so that a profiler sees one type's layer.
void BM_EncoderLayer(benchmark::State& state) {
  const int64_t tokens = state.range(0);
  const mue::ComputeType type = static_cast<mue::ComputeType>(state.range(1));
  if (!mue::compute_type_supported(type)) {
    state.SkipWithError("compute type not supported by oneDNN on this CPU");
    return;
  }
  state.SetLabel(mue::compute_type_name(type));
  Params p;
  std::string l = "encoder.layers.0";
  for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"})
    add_linear(p, l + ".self_attn." + proj, kD, kD);
  p.push_back({l + ".self_attn.c_attn", {kHeads}});
  for (const char* n : {"self_attn_layer_norm", "attn_ln", "final_layer_norm"})
    add_norm(p, l + "." + n, kD);
  add_norm(p, l + ".ffn_layernorm", kFfn);
  add_linear(p, l + ".fc1", kFfn, kD);
  add_linear(p, l + ".fc2", kD, kFfn);
  mue::WeightStore w(synthetic_file("encoder_layer", p));
  mue::TransformerDims dims{kD, kHeads, kFfn};
  dims.compute_type = type;
  mue::EncoderLayer layer = mue::EncoderLayer::load(w, l, dims);
  w.check();
  std::vector<float> x(tokens * kD, 0.1f), y(tokens * kD), bias(kHeads * tokens * tokens, 0.f);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<float>((i * 7919) % 1000) / 1000.f - 0.5f;
  mue::Arena arena;
  // The image stream's bias comes with its factors (zeros here, as the bias), which the bf16
  // path folds into Q K^T.
  std::vector<float> bias_q(tokens * kD, 0.f), bias_k(tokens * kD, 0.f);
  mue::AttentionMasking m;
  m.bias = bias.data();
  m.bias_row_stride = tokens;
  m.bias_q = bias_q.data();
  m.bias_k = bias_k.data();
  layer.forward(x.data(), y.data(), 1, tokens, m, arena);  // warm-up
  arena.reset();
  for (auto _ : state) {
    mue::ArenaScope scope(arena);
    layer.forward(x.data(), y.data(), 1, tokens, m, arena);
    benchmark::DoNotOptimize(y.data());
  }
  // 4 D x D projections + 2 FFN matmuls + QK^T and PV.
  double flops = 2.0 * tokens * (4 * kD * kD + 2 * kD * kFfn) + 4.0 * tokens * tokens * kD;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}

void BM_ResNetStages(benchmark::State& state) {
  const int64_t size = state.range(0);
  const std::vector<int> blocks{3, 4, 23};  // ResNet-101 (OFA-base)
  Params p;
  std::string pre = "encoder.embed_images";
  auto conv_bn = [&](const std::string& conv, const std::string& bn, int64_t out, int64_t in,
                     int k) {
    p.push_back({conv + ".weight", {out, in, k, k}});
    for (const char* s : {"weight", "bias", "running_mean", "running_var"})
      p.push_back({bn + "." + s, {out}});
  };
  conv_bn(pre + ".conv1", pre + ".bn1", 64, 3, 7);
  int64_t in = 64;
  for (int s = 0; s < 3; ++s) {
    int64_t planes = 64 << s, out = planes * 4;
    for (int b = 0; b < blocks[s]; ++b) {
      std::string q = pre + ".layer" + std::to_string(s + 1) + "." + std::to_string(b);
      conv_bn(q + ".conv1", q + ".bn1", planes, in, 1);
      conv_bn(q + ".conv2", q + ".bn2", planes, planes, 3);
      conv_bn(q + ".conv3", q + ".bn3", out, planes, 1);
      if (b == 0) conv_bn(q + ".downsample.0", q + ".downsample.1", out, in, 1);
      in = out;
    }
  }
  mue::WeightStore w(synthetic_file("resnet101", p));
  mue::ResNetBackbone net = mue::ResNetBackbone::load(w, pre, blocks, 64);
  w.check();
  std::vector<float> img(size * size * 3, 0.25f);
  auto [gh, gw] = net.grid(size, size);
  std::vector<float> out(gh * gw * net.out_channels());
  mue::Arena arena;
  net.forward(img.data(), 1, size, size, out.data(), arena);  // warm-up
  arena.reset();
  for (auto _ : state) {
    mue::ArenaScope scope(arena);
    net.forward(img.data(), 1, size, size, out.data(), arena);
    benchmark::DoNotOptimize(out.data());
  }
}

// --- Model-level: a random-weight OFA-base model from MUE_BENCH_MODEL --------------------------

struct ModelBench {
  std::unique_ptr<mue::Engine> engine;
  std::unique_ptr<mue::OfaModel> model;  // the same files, for stage timings below the Engine
  mue::PreparedImage image;
};

ModelBench* model_bench() {
  static ModelBench* mb = [] {
    const char* dir = std::getenv("MUE_BENCH_MODEL");
    if (!dir || !std::filesystem::exists(std::string(dir) + "/model.safetensors"))
      return (ModelBench*)nullptr;
    auto* b = new ModelBench;
    b->engine = mue::Engine::load(dir);
    b->model = mue::OfaModel::load(dir);
    const char* image = std::getenv("MUE_BENCH_IMAGE");
    if (image) {
      b->image = b->engine->prepare_image(image);
    } else {
      const auto& c = b->engine->config();
      b->image.pixels = mue::Tensor::zeros({c.image_height, c.image_width, 3});
      b->image.name = "zeros";
    }
    return b;
  }();
  return mb;
}

struct Setting {
  const char* name;
  mue::ExitPolicy policy;
};

std::map<std::string, double> g_seconds;       // mean seconds per sample, per benchmark
std::map<std::string, double> g_layer_saving;  // expected time reduction

void run_task(benchmark::State& state, bool caption, const Setting& s) {
  ModelBench* mb = model_bench();
  if (!mb) {
    state.SkipWithError("set MUE_BENCH_MODEL to a model directory (tools/bench.sh makes one)");
    return;
  }
  mue::CallOptions call;
  call.exit_policy = s.policy;
  // Warm-up: oneDNN creates (and reorders weights for) its primitives on first use per shape.
  mb->engine->clear_image_cache();
  if (caption)
    mb->engine->caption(mb->image, call);
  else
    mb->engine->entail(mb->image, "two people walk on a beach", "the people are outside", call);
  double total = 0, saving = 0;
  int64_t n = 0;
  for (auto _ : state) {
    mb->engine->clear_image_cache();
    auto t0 = std::chrono::steady_clock::now();
    if (caption) {
      auto r = mb->engine->caption(mb->image, call);
      saving = r.exits.expected_time_reduction();
      state.counters["decoder_layers"] = r.exits.mean_decoder_layers();
      state.counters["tokens"] = static_cast<double>(r.tokens.size());
    } else {
      auto r = mb->engine->entail(mb->image, "two people walk on a beach", "the people are outside",
                                  call);
      saving = r.exits.expected_time_reduction();
    }
    total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++n;
  }
  std::string key = std::string(caption ? "caption/" : "entail/") + s.name;
  g_seconds[key] = total / static_cast<double>(n);
  g_layer_saving[key] = saving;
  state.counters["expected_reduction"] = saving;
}

void BM_FullEncoder(benchmark::State& state) {
  ModelBench* mb = model_bench();
  if (!mb) {
    state.SkipWithError("set MUE_BENCH_MODEL to a model directory (tools/bench.sh makes one)");
    return;
  }
  const mue::OfaModel& model = *mb->model;
  const auto& c = model.config();
  mue::Tensor images =
      mb->image.pixels.reshape({1, int64_t{c.image_height}, int64_t{c.image_width}, 3});
  std::vector<int64_t> prompt = mb->engine->caption_prompt();
  mue::Tensor src = mue::Tensor::empty({1, static_cast<int64_t>(prompt.size())}, mue::DType::kI64);
  std::copy(prompt.begin(), prompt.end(), src.data<int64_t>());
  mue::Arena arena;
  model.encode(images, src, {}, {}, nullptr, &arena);  // warm-up: primitives, grid position bias
  mue::StageTimes times;
  int64_t n = 0;
  for (auto _ : state) {
    auto enc = model.encode(images, src, {}, {}, &times, &arena);
    benchmark::DoNotOptimize(enc.states.raw());
    ++n;
  }
  state.counters["resnet_ms"] = 1000 * times.resnet / n;
  state.counters["image_stream_ms"] = 1000 * times.image_stream / n;
  state.counters["text_stream_ms"] = 1000 * times.text_stream / n;
}

mue::ExitPolicy fixed(int image, int text, int decoder) {
  mue::ExitPolicy p;
  p.fixed_depth_image = image;
  p.fixed_depth_text = text;
  p.fixed_depth_decoder = decoder;
  return p;
}

// The paper's average depths (issue 3): VE image 2.03 of 6, text 6 (Table 2); captioning image 6,
// text 2.0, decoder about half of 6.
const Setting kFull{"full_depth", mue::ExitPolicy::full_depth()};
const Setting kVePaper{"paper_depths_image2_text6", fixed(2, 0, 0)};
const Setting kCaptionPaper{"paper_depths_text2_decoder3", fixed(0, 2, 3)};

void BM_EntailFull(benchmark::State& s) { run_task(s, false, kFull); }
void BM_EntailPaperDepths(benchmark::State& s) { run_task(s, false, kVePaper); }
void BM_CaptionFull(benchmark::State& s) { run_task(s, true, kFull); }
void BM_CaptionPaperDepths(benchmark::State& s) { run_task(s, true, kCaptionPaper); }

BENCHMARK(BM_EncoderLayer)
    ->ArgNames({"tokens", "type"})
    ->Args({900, 0})
    ->Args({900, 1})
    ->Args({900, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ResNetStages)->Arg(480)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_FullEncoder)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_EntailFull)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_EntailPaperDepths)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_CaptionFull)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_CaptionPaperDepths)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  {  // the machine block (apps/common/machine.h) in the JSON context and on stdout
    const nlohmann::json machine = mue::apps::machine_block(mue::num_threads());
    benchmark::AddCustomContext("mue_machine", machine.dump());
    std::printf("machine: %s\n", mue::apps::machine_line(machine).c_str());
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  // Issue 3's table: layer-count and wall-clock reductions side by side.
  for (const char* task : {"entail", "caption"}) {
    std::string full = std::string(task) + "/full_depth";
    if (!g_seconds.count(full)) continue;
    std::printf("\n%-8s %-30s %10s %12s %12s\n", task, "setting", "ms/sample", "layer-count",
                "wall-clock");
    for (const auto& [key, sec] : g_seconds) {
      if (key.rfind(task, 0) != 0) continue;
      std::printf("%-8s %-30s %10.1f %11.1f%% %11.1f%%\n", "",
                  key.substr(key.find('/') + 1).c_str(), 1000 * sec, 100 * g_layer_saving[key],
                  100 * (1 - sec / g_seconds[full]));
    }
  }
  return 0;
}
