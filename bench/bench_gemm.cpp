// GEMM and attention throughput at OFA-base shapes (D=768, F=3072, 12 heads of 64; spec 3.1).
// Counters: GFLOP/s, and pct_peak = share of the fp32 peak of the cores in use: FLOP/cycle per
// core (MUE_FLOP_PER_CYCLE if set, else from /proc/cpuinfo: 64 for two 512-bit FMA pipes, i.e.
// Intel with AVX-512 and AMD from Zen 5 (family 26); 32 for two 256-bit pipes, i.e. AVX2 and
// Zen 4's double-pumped AVX-512) times a clock taken from MUE_CPU_MHZ if set, else measured (a
// chain of dependent integer adds runs at one per cycle), else /proc/cpuinfo "cpu MHz". A VM's
// cpuinfo often shows the base clock, not the boost.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "apps/common/machine.h"
#include "kernels/kernels.h"
#include "mue/runtime.h"

namespace {

using mue::kernels::Activation;

// A positive number from the environment variable `name`; anything else ends the run with an
// error naming the variable (a zero or garbage rate would print every pct_peak as inf).
double positive_env(const char* name, const char* value) {
  char* end = nullptr;
  const double v = std::strtod(value, &end);
  if (end == value || *end != '\0' || !(v > 0) || !std::isfinite(v)) {
    std::fprintf(stderr, "bench_gemm: %s='%s' is not a positive number\n", name, value);
    std::exit(2);
  }
  return v;
}

struct FlopRate {
  double per_cycle;
  std::string source;
};

const FlopRate& flop_rate() {
  static const FlopRate rate = []() -> FlopRate {
    if (const char* env = std::getenv("MUE_FLOP_PER_CYCLE"))
      return {positive_env("MUE_FLOP_PER_CYCLE", env), "MUE_FLOP_PER_CYCLE"};
    const mue::MachineInfo m = mue::machine_info();
    std::string isa(1, ' ');
    isa.append(m.cpu_isa).push_back(' ');
    const bool avx512 = isa.find(" avx512f ") != std::string::npos;
    const bool fma = isa.find(" fma ") != std::string::npos;
    const std::string& vendor = m.cpu_vendor;
    const int family = m.cpu_family;
    std::string what = vendor;
    what.append(" family ").append(std::to_string(family));
    if (avx512 && (vendor == "GenuineIntel" || (vendor == "AuthenticAMD" && family >= 26)))
      return {64, what.append(", two 512-bit FMA pipes")};
    if (fma) {
      what.append(", two 256-bit FMA pipes");
      if (avx512) what.append(" (AVX-512 double-pumped)");
      return {32, what};
    }
    return {16, what.append(", no FMA")};
  }();
  return rate;
}

double cpuinfo_mhz() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("cpu MHz", 0) == 0) return std::atof(line.substr(line.find(':') + 1).c_str());
  }
  return 0;
}

// Fastest of several runs of 8M dependent adds: the fastest run was not preempted.
double measured_mhz() {
#if defined(__x86_64__)
  constexpr int64_t kIterations = 1 << 20, kAddsPerIteration = 8;
  double best_seconds = 1e30;
  for (int run = 0; run < 20; ++run) {
    uint64_t chain = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < kIterations; ++i) {
      asm volatile(
          "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
          "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
          : "+r"(chain));
    }
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    best_seconds = std::min(best_seconds, elapsed.count());
  }
  return kIterations * kAddsPerIteration / best_seconds * 1e-6;
#else
  return 0;
#endif
}

struct Clock {
  double mhz;
  const char* source;
};

const Clock& clock_assumption() {
  static const Clock clock = [] {
    if (const char* env = std::getenv("MUE_CPU_MHZ"))
      return Clock{positive_env("MUE_CPU_MHZ", env), "MUE_CPU_MHZ"};
    if (const double mhz = measured_mhz(); mhz > 0) return Clock{mhz, "measured"};
    return Clock{cpuinfo_mhz(), "/proc/cpuinfo cpu MHz"};
  }();
  return clock;
}

int all_threads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

double peak_flops(int threads) {
  return threads * flop_rate().per_cycle * clock_assumption().mhz * 1e6;
}

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Times the benchmark loop by wall clock (all threads work at once) and sets the counters.
template <typename Body>
void run_and_count(benchmark::State& state, double flop_per_iteration, int threads, Body body) {
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) body();
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  const double flops =
      flop_per_iteration * static_cast<double>(state.iterations()) / elapsed.count();
  state.counters["GFLOP/s"] = flops * 1e-9;
  state.counters["pct_peak"] = 100 * flops / peak_flops(threads);
  state.SetLabel(std::to_string(threads) + " thread" + (threads > 1 ? "s" : ""));
}

int threads_arg(int64_t arg) { return arg == 0 ? all_threads() : static_cast<int>(arg); }

// Args: m, n, k, threads (0 = all). Weights in PyTorch layout, repacked by oneDNN per call.
void BM_Linear(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const int threads = threads_arg(state.range(3));
  mue::set_num_threads(threads);
  const auto x = random_vector(m * k, 1), w = random_vector(n * k, 2), b = random_vector(n, 3);
  std::vector<float> y(m * n);
  mue::kernels::linear(x.data(), w.data(), b.data(), y.data(), m, n, k);  // creates the primitive
  run_and_count(state, 2.0 * m * n * k, threads, [&] {
    mue::kernels::linear(x.data(), w.data(), b.data(), y.data(), m, n, k);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  });
}

// The same with weights packed once at construction.
void BM_PackedLinear(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const int threads = threads_arg(state.range(3));
  mue::set_num_threads(threads);
  const auto x = random_vector(m * k, 1), w = random_vector(n * k, 2), b = random_vector(n, 3);
  std::vector<float> y(m * n);
  const mue::kernels::PackedLinear packed(w.data(), b.data(), n, k);
  packed.forward(x.data(), y.data(), m);  // creates the primitive
  run_and_count(state, 2.0 * m * n * k, threads, [&] {
    packed.forward(x.data(), y.data(), m);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  });
}

void LinearShapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"m", "n", "k", "threads"});
  for (int threads : {1, 0}) {
    for (int64_t m : {1, 5, 64, 900}) {
      for (auto [n, k] : {std::pair<int64_t, int64_t>{768, 768}, {3072, 768}, {768, 3072}}) {
        b->Args({m, n, k, threads});
      }
    }
  }
}
BENCHMARK(BM_Linear)->Apply(LinearShapes)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PackedLinear)->Apply(LinearShapes)->UseRealTime()->Unit(benchmark::kMicrosecond);

mue::kernels::AttentionArgs token_major_attention(int64_t batch, int64_t heads, int64_t tq,
                                                  int64_t tk, int64_t dh, const float* q,
                                                  const float* k, const float* v, float* out) {
  const int64_t width = heads * dh;
  mue::kernels::AttentionArgs a;
  a.batch = batch;
  a.heads = heads;
  a.tq = tq;
  a.tk = tk;
  a.head_dim = dh;
  a.scale = 1.f / std::sqrt(2.f * dh);  // spec 3.5
  a.q = q;
  a.k = k;
  a.v = v;
  a.out = out;
  a.q_batch_stride = a.out_batch_stride = tq * width;
  a.k_batch_stride = a.v_batch_stride = tk * width;
  a.q_head_stride = a.k_head_stride = a.v_head_stride = a.out_head_stride = dh;
  a.q_row_stride = a.k_row_stride = a.v_row_stride = a.out_row_stride = width;
  return a;
}

// Image-stream self-attention: 900 tokens, 12 heads of 64, [T, H*Dh] projections, with OFA's
// [H, T, T] position bias (spec 3.4). Args: threads; bf16 (1: bf16 products, as the bf16 and
// int8 compute types run them where the CPU has native bf16).
void BM_Attention(benchmark::State& state) {
  const int64_t tokens = 900, heads = 12, dh = 64;
  const int threads = threads_arg(state.range(0));
  mue::set_num_threads(threads);
  const auto q = random_vector(tokens * heads * dh, 4), k = random_vector(tokens * heads * dh, 5),
             v = random_vector(tokens * heads * dh, 6),
             bias = random_vector(heads * tokens * tokens, 7);
  std::vector<float> out(tokens * heads * dh);
  auto a =
      token_major_attention(1, heads, tokens, tokens, dh, q.data(), k.data(), v.data(), out.data());
  a.bias = bias.data();
  a.bias_head_stride = tokens * tokens;
  a.bias_row_stride = tokens;
  a.bf16_products = state.range(1) != 0;
  if (a.bf16_products && !mue::kernels::attention_uses_bf16(tokens, tokens)) {
    state.SkipWithError("no native bf16 on this CPU: the bf16 products would run in fp32");
    return;
  }
  mue::kernels::attention(a);
  // Q K^T and P V: tokens^2 * dh multiply-adds each, per head.
  run_and_count(state, 4.0 * heads * tokens * tokens * dh, threads, [&] {
    mue::kernels::attention(a);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  });
}
BENCHMARK(BM_Attention)
    ->ArgNames({"threads", "bf16"})
    ->Args({1, 0})
    ->Args({0, 0})
    ->Args({1, 1})
    ->Args({0, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// One decoder step of cross-attention: 5 beams x 12 heads, one query each over 900 image + 37
// text keys. The beams of a sentence share the encoder's K/V (batch stride 0), which lets the
// kernel fold the beams into one GEMM per head; with a copy per beam the step would read 29 MB
// and be memory-bound. Arg: threads.
void BM_AttentionDecodeStep(benchmark::State& state) {
  const int64_t beams = 5, heads = 12, dh = 64, keys = 937;
  const int threads = threads_arg(state.range(0));
  mue::set_num_threads(threads);
  const auto q = random_vector(beams * heads * dh, 8), k = random_vector(keys * heads * dh, 9),
             v = random_vector(keys * heads * dh, 10);
  std::vector<float> out(beams * heads * dh);
  auto a =
      token_major_attention(beams, heads, 1, keys, dh, q.data(), k.data(), v.data(), out.data());
  a.k_batch_stride = a.v_batch_stride = 0;
  mue::kernels::attention(a);
  run_and_count(state, 4.0 * beams * heads * keys * dh, threads, [&] {
    mue::kernels::attention(a);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  });
}
BENCHMARK(BM_AttentionDecodeStep)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(0)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  const Clock& clock = clock_assumption();
  std::printf(
      "fp32 peak assumption: %.0f MHz (%s; /proc/cpuinfo says %.0f) x %.0f FLOP/cycle (%s) = "
      "%.1f GFLOP/s per core, %d cores\n",
      clock.mhz, clock.source, cpuinfo_mhz(), flop_rate().per_cycle, flop_rate().source.c_str(),
      peak_flops(1) * 1e-9, all_threads());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  {  // the machine block (apps/common/machine.h) in the JSON context and on stdout
    const nlohmann::json machine = mue::apps::machine_block(mue::num_threads());
    benchmark::AddCustomContext("mue_machine", machine.dump());
    std::printf("machine: %s\n", mue::apps::machine_line(machine).c_str());
    // What a weight-bound GEMM (the decoder's M = 1..80) can reach at best.
    const nlohmann::json stream = mue::apps::measured_stream_bandwidth(mue::num_threads());
    benchmark::AddCustomContext("mue_stream", stream.dump());
    std::printf("stream bandwidth, %d threads, %.0f MB: read %.1f GB/s, triad %.1f GB/s\n",
                stream.at("threads").get<int>(), stream.at("bytes").get<double>() * 1e-6,
                stream.at("read_gbps").get<double>(), stream.at("triad_gbps").get<double>());
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
