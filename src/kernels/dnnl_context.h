// Internal to src/kernels: the oneDNN engine, per-thread streams and scratchpads, and the
// conversion of oneDNN failures into mue::Error.
#pragma once

#include <omp.h>

#include <cstdint>
#include <cstdlib>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <vector>

#include "mue/tensor.h"

namespace mue::kernels::detail {

// One CPU engine for the process; engines are thread-safe.
inline dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// A stream per thread: the encoder's text and image streams may run kernels concurrently, and
// oneDNN does not promise that one stream may be used from several threads at once.
inline dnnl::stream& cpu_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

// Primitives are created with a user-managed scratchpad so that the same cached primitive can be
// executed from several threads at once; each thread brings its own scratch memory.
inline dnnl::primitive_attr user_scratchpad_attr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// Per-thread scratch that only grows, always 64-byte aligned: a vector's malloc'd alignment
// varies with the thread's history, and with it where vectorised loops start their aligned
// packets, which changes the last bits of sums. Aligned scratch keeps results independent of
// which thread runs a call and what it ran before.
class AlignedScratch {
 public:
  AlignedScratch() = default;
  AlignedScratch(const AlignedScratch&) = delete;
  AlignedScratch& operator=(const AlignedScratch&) = delete;
  ~AlignedScratch() { std::free(data_); }
  void* get(size_t bytes) {
    if (bytes > size_) {
      size_t size = (bytes + kAlignment - 1) / kAlignment * kAlignment;
      void* p = std::aligned_alloc(kAlignment, size);
      if (!p)
        throw Error("kernel scratch: out of memory allocating " + std::to_string(size) + " bytes");
      std::free(data_);
      data_ = p;
      size_ = size;
    }
    return data_;
  }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

inline dnnl::memory thread_scratchpad(const dnnl::memory::desc& desc) {
  thread_local AlignedScratch buffer;
  return dnnl::memory(desc, cpu_engine(), buffer.get(desc.get_size()));
}

// Per-thread buffers for a kernel's converted operands (bf16 or u8 inputs, int8 scales and
// accumulators), apart from the scratchpad; slots 0..3, each used by one operand of a call.
inline void* thread_buffer(int slot, size_t bytes) {
  thread_local AlignedScratch buffers[4];
  return buffers[slot].get(bytes);
}

// Folds v into the hash h (boost's hash_combine), for the primitive caches' keys.
inline void hash_mix(size_t& h, size_t v) { h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2); }

// oneDNN primitives may be tuned to the thread count they were created under, so caches key on it.
inline int current_threads() { return omp_get_max_threads(); }

[[noreturn]] inline void rethrow_dnnl(const char* what, const dnnl::error& e) {
  throw Error(std::string(what) + ": oneDNN failed: " + e.what());
}

}  // namespace mue::kernels::detail
