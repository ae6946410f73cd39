#include "apps/common/machine.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <thread>
#include <tuple>
#include <vector>

#include "mue/runtime.h"

namespace mue::apps {

namespace {

constexpr ComputeType kTypes[] = {ComputeType::kF32, ComputeType::kBF16, ComputeType::kInt8};

double matmul_gflops(ComputeType type) {
  using dnnl::memory;
  using DataType = memory::data_type;
  DataType src = DataType::f32, weights = DataType::f32, dst = DataType::f32;
  if (type == ComputeType::kBF16) src = weights = DataType::bf16;
  if (type == ComputeType::kInt8) src = DataType::u8, weights = DataType::s8, dst = DataType::s32;
  const memory::dim n = 1024;
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  dnnl::matmul::primitive_desc pd;
  try {
    pd = dnnl::matmul::primitive_desc(
        dnnl::matmul::desc(memory::desc({n, n}, src, memory::format_tag::ab),
                           memory::desc({n, n}, weights, memory::format_tag::any),
                           memory::desc({n, n}, dst, memory::format_tag::ab)),
        engine);
  } catch (const dnnl::error&) {
    return 0;  // not supported on this CPU
  }
  // Inputs hold small integers (exact in every type); the weights are reordered to the
  // primitive's layout once, as the engine does at load.
  auto filled = [&](const memory::desc& md) {
    memory m(md, engine);
    std::vector<uint8_t> bytes(md.get_size());
    if (md.data_type() == DataType::f32) {
      for (size_t i = 0; i < bytes.size() / 4; ++i)
        reinterpret_cast<float*>(bytes.data())[i] = static_cast<float>(i % 7) - 3.0f;
    } else if (md.data_type() == DataType::bf16) {
      for (size_t i = 0; i < bytes.size() / 2; ++i)  // bf16 of small integers: the f32 top half
        reinterpret_cast<uint16_t*>(bytes.data())[i] = 0x3f80;  // 1.0
    } else {
      for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i % 5);
    }
    std::copy(bytes.begin(), bytes.end(), static_cast<uint8_t*>(m.get_data_handle()));
    return m;
  };
  memory src_m = filled(pd.src_desc());
  memory plain_w = filled(memory::desc({n, n}, weights, memory::format_tag::ab));
  memory w_m(pd.weights_desc(), engine);
  dnnl::reorder(plain_w, w_m).execute(stream, plain_w, w_m);
  memory dst_m(pd.dst_desc(), engine);
  dnnl::matmul matmul(pd);
  auto run = [&] {
    matmul.execute(stream, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, w_m}, {DNNL_ARG_DST, dst_m}});
    stream.wait();
  };
  run();  // warm-up
  using Clock = std::chrono::steady_clock;
  double best = 1e30, spent = 0;
  for (int i = 0; i < 200 && (i < 3 || spent < 0.2); ++i) {
    Clock::time_point t = Clock::now();
    run();
    double s = std::chrono::duration<double>(Clock::now() - t).count();
    best = std::min(best, s);
    spent += s;
  }
  return 2.0 * static_cast<double>(n * n * n) / best * 1e-9;
}

// Runs body(part) for parts 0..threads-1 on that many threads; the seconds until all end.
template <typename Body>
double timed_parts(int threads, Body body) {
  using Clock = std::chrono::steady_clock;
  Clock::time_point start = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(body, t);
  for (std::thread& t : pool) t.join();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

nlohmann::json measured_stream_bandwidth(int threads, size_t bytes, int passes) {
  static std::mutex mutex;
  static std::map<std::tuple<int, size_t, int>, nlohmann::json> measured;
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_tuple(threads, bytes, passes);
  if (measured.count(key)) return measured[key];
  threads = std::max(1, threads);
  passes = std::max(1, passes);
  // Integers for the read: their sum vectorises without reassociating floats.
  const size_t n = bytes / sizeof(uint32_t) / 3 * 3;
  std::unique_ptr<uint32_t[]> buffer(new uint32_t[n]);  // uninitialised: touched below
  auto part = [&](size_t count, int t) {
    return std::pair<size_t, size_t>(count * t / threads, count * (t + 1) / threads);
  };
  // First touch on the threads that read it, as the engine's threads touch their tensors.
  timed_parts(threads, [&](int t) {
    auto [begin, end] = part(n, t);
    for (size_t i = begin; i < end; ++i) buffer[i] = static_cast<uint32_t>(i);
  });
  std::vector<uint32_t> sums(static_cast<size_t>(threads));
  double best_read = 1e30;
  for (int p = 0; p < passes; ++p)
    best_read = std::min(best_read, timed_parts(threads, [&](int t) {
                           auto [begin, end] = part(n, t);
                           uint32_t sum = 0;
                           for (size_t i = begin; i < end; ++i) sum += buffer[i];
                           sums[static_cast<size_t>(t)] = sum;  // keeps the loop
                         }));
  // Triad over three thirds of the same buffer, as floats.
  float* a = reinterpret_cast<float*>(buffer.get());
  const size_t third = n / 3;
  const float* b = a + third;
  const float* c = a + 2 * third;
  timed_parts(threads, [&](int t) {  // small finite floats, so no denormal slows the triad
    auto [begin, end] = part(n, t);
    for (size_t i = begin; i < end; ++i) a[i] = static_cast<float>(i % 1024);
  });
  double best_triad = 1e30;
  for (int p = 0; p < passes; ++p)
    best_triad = std::min(best_triad, timed_parts(threads, [&](int t) {
                            auto [begin, end] = part(third, t);
                            for (size_t i = begin; i < end; ++i) a[i] = b[i] + 0.5f * c[i];
                          }));
  static volatile uint32_t kept;  // the sums are used, so the reads cannot be left out
  for (uint32_t s : sums) kept = kept + s;
  nlohmann::json result = {
      {"read_gbps", static_cast<double>(n * sizeof(uint32_t)) / best_read * 1e-9},
      {"triad_gbps", static_cast<double>(3 * third * sizeof(float)) / best_triad * 1e-9},
      {"bytes", n * sizeof(uint32_t)},
      {"threads", threads},
      {"passes", passes},
      {"note",
       "read: a sum over the buffer; triad: a = b + s c over its thirds, 12 bytes an element "
       "(STREAM's count, the store's read-for-ownership not counted); best of the passes"}};
  measured[key] = result;
  return result;
}

double measured_matmul_gflops(ComputeType type, int threads) {
  const int previous = num_threads();
  set_num_threads(threads);
  double gflops = matmul_gflops(type);
  set_num_threads(previous);
  return gflops;
}

nlohmann::json machine_block(int threads) {
  static std::mutex mutex;
  static std::map<int, nlohmann::json> peaks;  // by thread count: measured once per process
  const MachineInfo m = machine_info();
  nlohmann::json block = m.to_json();
  nlohmann::json kernels;
  for (ComputeType t : kTypes) kernels[compute_type_name(t)] = compute_type_implementation(t);
  block["onednn_kernels"] = kernels;
  block["auto_compute_type"] = compute_type_name(resolve_compute_type(ComputeType::kAuto));
  std::lock_guard<std::mutex> lock(mutex);
  if (!peaks.count(threads)) {
    nlohmann::json p;
    for (ComputeType t : kTypes) p[compute_type_name(t)] = measured_matmul_gflops(t, threads);
    peaks[threads] = p;
  }
  block["peak_threads"] = threads;
  block["peak_note"] =
      "oneDNN matmul 1024x1024x1024, best of repeated runs over about 0.2 s after a warm-up "
      "(int8: u8 x s8 -> s32, GOP/s)";
  block["fp32_peak_gflops"] = peaks[threads]["f32"];
  block["measured_peak_gflops"] = peaks[threads];
  return block;
}

std::string machine_line(const nlohmann::json& b) {
  char text[512];
  const nlohmann::json& k = b.at("onednn_kernels");
  const nlohmann::json& p = b.at("measured_peak_gflops");
  std::snprintf(
      text, sizeof text,
      "%s (%s family %d model %d), %d cores; oneDNN %s uses %s (f32 %s, bf16 %s, int8 %s; "
      "auto = %s); matmul peak at %d threads: f32 %.0f, bf16 %.0f, int8 %.0f GFLOP/s",
      b.at("cpu_model").get<std::string>().c_str(), b.at("cpu_vendor").get<std::string>().c_str(),
      b.at("cpu_family").get<int>(), b.at("cpu_model_number").get<int>(), b.at("cores").get<int>(),
      b.at("onednn_version").get<std::string>().c_str(),
      b.at("onednn_isa").get<std::string>().c_str(), k.at("f32").get<std::string>().c_str(),
      k.at("bf16").get<std::string>().c_str(), k.at("int8").get<std::string>().c_str(),
      b.at("auto_compute_type").get<std::string>().c_str(), b.at("peak_threads").get<int>(),
      p.at("f32").get<double>(), p.at("bf16").get<double>(), p.at("int8").get<double>());
  return text;
}

}  // namespace mue::apps
