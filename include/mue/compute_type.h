// The arithmetic the GEMMs and convolutions run in (EngineOptions::compute_type). LayerNorm,
// softmax, the residual stream and the exit controller's cosine are fp32 under every type; so
// are the position projections, computed once per model or image grid. Attention's QK^T/PV are
// fp32 too, except under bf16 and int8 on CPUs with native bf16 (AVX512-BF16, AMX), where the
// large ones (the image stream's) take bf16 operands with fp32 accumulation.
//
//   f32   fp32 weights and inputs (the default; exact parity with earlier releases)
//   bf16  weights stored in bf16 at load, inputs rounded to bf16 per call, fp32 accumulation
//         and output
//   int8  linear layers: weights s8 symmetric per output channel (scales computed at load),
//         inputs u8 per row with their own scale and zero point (dynamic), s32 accumulation,
//         the zero point's compensation precomputed at load, fp32 output. Convolutions after
//         a ReLU (all but the ResNet's stem): s8 weights per output channel, each sample's
//         input map u8 with its own scale (dynamic, no zero point), s32 accumulation, fp32
//         output. The stem runs in bf16 where the CPU has it, else in fp32.
//   auto  the fastest type this CPU runs natively (resolve_compute_type)
#pragma once

#include <string>

namespace mue {

enum class ComputeType { kF32, kBF16, kInt8, kAuto };

// "f32", "bf16", "int8", "auto".
const char* compute_type_name(ComputeType type);
// The inverse of compute_type_name; any other text throws mue::Error listing the names.
ComputeType parse_compute_type(const std::string& name);

// kAuto -> int8 where the ISA oneDNN chose at run time has VNNI or AMX int8 (avx2_vnni,
// avx512_core_vnni, avx512_core_bf16, avx512_core_amx), else bf16 where it has native bf16
// (AVX512-BF16 or AMX-BF16; oneDNN 2.6 knows no such ISA without VNNI), else f32. Other types
// are returned as they are.
ComputeType resolve_compute_type(ComputeType type);

// Whether oneDNN runs `type` on this CPU at all (kAuto: always). oneDNN 2.6 has bf16 only from
// AVX-512 (emulated on avx512_core, native from avx512_core_bf16); int8 runs everywhere, on
// VNNI/AMX natively. Engine::load refuses a type that is not supported.
bool compute_type_supported(ComputeType type);

// The oneDNN implementation a linear layer of OFA-base shape (M=64, K=N=768) gets under `type`
// (e.g. "brg:avx512_core_amx"), or "unsupported": what `mue info` prints per type.
std::string compute_type_implementation(ComputeType type);

}  // namespace mue
