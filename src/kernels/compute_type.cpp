// Compute types (mue/compute_type.h): names, what oneDNN supports here, and what `auto` means.
#include "mue/compute_type.h"

#include <oneapi/dnnl/dnnl.hpp>

#include "kernels/dnnl_context.h"
#include "mue/tensor.h"

namespace mue {
namespace {

// A matmul primitive descriptor for `type` at M=64, K=N=768 (OFA-base's projections), or throws
// dnnl::error where oneDNN has no implementation for the type on this CPU.
dnnl::matmul::primitive_desc probe_matmul(ComputeType type) {
  using dnnl::memory;
  using DataType = memory::data_type;
  DataType src = DataType::f32, weights = DataType::f32, dst = DataType::f32;
  if (type == ComputeType::kBF16) src = weights = DataType::bf16;
  if (type == ComputeType::kInt8) src = DataType::u8, weights = DataType::s8, dst = DataType::s32;
  const memory::dim m = 64, k = 768, n = 768;
  dnnl::matmul::desc desc(memory::desc({m, k}, src, memory::format_tag::ab),
                          memory::desc({k, n}, weights, memory::format_tag::any),
                          memory::desc({m, n}, dst, memory::format_tag::ab));
  return dnnl::matmul::primitive_desc(desc, kernels::detail::cpu_engine());
}

bool probe_supported(ComputeType type) {
  try {
    probe_matmul(type);
    return true;
  } catch (const dnnl::error&) {
    return false;
  }
}

}  // namespace

const char* compute_type_name(ComputeType type) {
  switch (type) {
    case ComputeType::kF32:
      return "f32";
    case ComputeType::kBF16:
      return "bf16";
    case ComputeType::kInt8:
      return "int8";
    case ComputeType::kAuto:
      return "auto";
  }
  return "unknown";
}

ComputeType parse_compute_type(const std::string& name) {
  for (ComputeType t :
       {ComputeType::kF32, ComputeType::kBF16, ComputeType::kInt8, ComputeType::kAuto})
    if (name == compute_type_name(t)) return t;
  throw Error("compute type \"" + name + "\" is not one of f32, bf16, int8, auto");
}

bool compute_type_supported(ComputeType type) {
  // oneDNN reads its ISA limit (ONEDNN_MAX_CPU_ISA) once, so the answers never change.
  static const bool bf16 = probe_supported(ComputeType::kBF16);
  static const bool int8 = probe_supported(ComputeType::kInt8);
  switch (type) {
    case ComputeType::kBF16:
      return bf16;
    case ComputeType::kInt8:
      return int8;
    default:
      return true;
  }
}

ComputeType resolve_compute_type(ComputeType type) {
  if (type != ComputeType::kAuto) return type;
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::avx2_vnni:
    case dnnl::cpu_isa::avx512_core_vnni:
    case dnnl::cpu_isa::avx512_core_bf16:
    case dnnl::cpu_isa::avx512_core_amx:
      if (compute_type_supported(ComputeType::kInt8)) return ComputeType::kInt8;
      break;
    default:
      break;
  }
  // No oneDNN 2.6 ISA has native bf16 without VNNI, so this is for later versions' sake.
  return ComputeType::kF32;
}

std::string compute_type_implementation(ComputeType type) {
  type = resolve_compute_type(type);
  try {
    return probe_matmul(type).impl_info_str();
  } catch (const dnnl::error&) {
    return "unsupported";
  }
}

}  // namespace mue
