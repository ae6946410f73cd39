// What machine a run is on (include/mue/runtime.h): benchmarks print it beside their figures.
#include <cstdlib>
#include <fstream>
#include <oneapi/dnnl/dnnl.hpp>
#include <set>
#include <sstream>

#include "mue/runtime.h"

namespace mue {
namespace {

const char* onednn_isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41:
      return "sse41";
    case dnnl::cpu_isa::avx:
      return "avx";
    case dnnl::cpu_isa::avx2:
      return "avx2";
    case dnnl::cpu_isa::avx2_vnni:
      return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core:
      return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx:
      return "avx512_core_amx";
    default:
      return "other";
  }
}

}  // namespace

MachineInfo machine_info() {
  MachineInfo m;
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  std::set<std::string> flags;
  while (std::getline(cpuinfo, line)) {
    auto value = [&] {
      size_t colon = line.find(':');
      return colon == std::string::npos ? std::string() : line.substr(colon + 2);
    };
    if (m.cpu_model.empty() && line.rfind("model name", 0) == 0) m.cpu_model = value();
    if (m.cpu_vendor.empty() && line.rfind("vendor_id", 0) == 0) m.cpu_vendor = value();
    if (m.cpu_family == 0 && line.rfind("cpu family", 0) == 0)
      m.cpu_family = std::atoi(value().c_str());
    if (m.cpu_model_number == 0 && line.rfind("model\t", 0) == 0)
      m.cpu_model_number = std::atoi(value().c_str());
    if (flags.empty() && line.rfind("flags", 0) == 0) {
      std::istringstream words(value());
      for (std::string w; words >> w;) flags.insert(w);
    }
  }
  // The extensions that matter to our kernels, in the order they were added.
  for (const char* isa :
       {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"})
    if (flags.count(isa)) {
      if (!m.cpu_isa.empty()) m.cpu_isa += ' ';
      m.cpu_isa += isa;
    }
  m.onednn_isa = onednn_isa_name(dnnl::get_effective_cpu_isa());
  const dnnl_version_t* v = dnnl_version();
  m.onednn_version =
      std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
  m.cores = hardware_threads();
  for (const char* name : {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS"})
    if (const char* env = std::getenv(name)) {
      if (!m.openmp_environment.empty()) m.openmp_environment += ' ';
      m.openmp_environment.append(name).append("=").append(env);
    }
  return m;
}

nlohmann::json MachineInfo::to_json() const {
  return {{"cpu_model", cpu_model},
          {"cpu_vendor", cpu_vendor},
          {"cpu_family", cpu_family},
          {"cpu_model_number", cpu_model_number},
          {"cpu_isa", cpu_isa},
          {"onednn_isa", onednn_isa},
          {"onednn_version", onednn_version},
          {"cores", cores},
          {"openmp_environment", openmp_environment}};
}

}  // namespace mue
