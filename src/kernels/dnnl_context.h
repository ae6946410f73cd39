// Internal to src/kernels: the oneDNN engine, per-thread streams and scratchpads, and the
// conversion of oneDNN failures into mue::Error.
#pragma once

#include <omp.h>

#include <cstdint>
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

inline dnnl::memory thread_scratchpad(const dnnl::memory::desc& desc) {
  thread_local std::vector<uint8_t> buffer;
  const size_t size = desc.get_size();
  if (buffer.size() < size) buffer.resize(size);
  return dnnl::memory(desc, cpu_engine(), buffer.data());
}

// oneDNN primitives may be tuned to the thread count they were created under, so caches key on it.
inline int current_threads() { return omp_get_max_threads(); }

[[noreturn]] inline void rethrow_dnnl(const char* what, const dnnl::error& e) {
  throw Error(std::string(what) + ": oneDNN failed: " + e.what());
}

}  // namespace mue::kernels::detail
