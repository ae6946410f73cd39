// The machine block every benchmark report carries (mue-bench, bench_load, bench_model,
// bench_compare): the CPU, the ISA oneDNN chose, oneDNN's kernel per compute type, what `auto`
// resolves to, and peaks measured on this run with oneDNN's own matmul.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>

#include "mue/compute_type.h"

namespace mue::apps {

// GFLOP/s of oneDNN's matmul at M = K = N = 1024 in `type` (f32; bf16 in, f32 out; int8: u8 x s8
// -> s32) on `threads` OpenMP threads: the best of repeated runs over about 0.2 s after a
// warm-up. A type oneDNN cannot run here gives 0.
double measured_matmul_gflops(ComputeType type, int threads);

// Memory bandwidth as STREAM measures it, on `threads` threads (std::thread, each on its own
// contiguous part): "read_gbps", a sum over a buffer of `bytes`, and "triad_gbps", a[i] = b[i] +
// s c[i] over three arrays of bytes / 3 each (12 bytes an element counted, as STREAM does);
// best of `passes` after a first-touch pass. The buffer should be far larger than the last-level
// cache. Also "bytes", "threads", "passes". Measured once per process per argument set.
nlohmann::json measured_stream_bandwidth(int threads, size_t bytes = size_t{1} << 30,
                                         int passes = 5);

// {cpu_model, cpu_isa, onednn_isa, onednn_version, cores, openmp_environment,
//  onednn_kernels: {f32, bf16, int8}, auto_compute_type, peak_threads,
//  fp32_peak_gflops, measured_peak_gflops: {f32, bf16, int8}}
// The peaks are measured once per process (the first call) at `threads` threads.
nlohmann::json machine_block(int threads);

// One line for a report's header: "CPU; oneDNN ISA; kernels f32 ... ; fp32 peak N GFLOP/s".
std::string machine_line(const nlohmann::json& block);

}  // namespace mue::apps
