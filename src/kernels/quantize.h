// Internal to src/kernels: the conversions the bf16 and int8 compute types need around oneDNN's
// primitives. Plain loops on the AVX2 baseline (the compiler vectorises them); oneDNN's own
// primitives dispatch to the CPU's ISA at run time.
#pragma once

#include <bit>
#include <cstdint>

namespace mue::kernels {
struct RowLayerNorm;
}  // namespace mue::kernels

namespace mue::kernels::detail {

// One value's fp32 -> bf16 bits, rounded to nearest even (NaN stays NaN); inline so that loops
// elsewhere can fuse it.
inline uint16_t bf16_bits(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);  // not memcpy: loops using it vectorise
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
  return static_cast<uint16_t>(nan ? ((bits >> 16) | 0x40u) : rounded);
}

// The same over an array. OpenMP-parallel when large. On CPUs with AVX512-BF16 (see
// native_bf16_conversion) the CPU's own conversion runs instead: the same bits, except that
// subnormal inputs become zero.
void to_bf16(const float* x, uint16_t* y, int64_t n);
// The same of scale * x[i], on the calling thread only (for loops already inside a parallel
// region, where even an inactive nested region costs more than a row's conversion).
void to_bf16_serial(const float* x, float scale, uint16_t* y, int64_t n);
// Whether this CPU has AVX-512 with AVX512-BF16 and oneDNN's ISA (capped or not by
// ONEDNN_MAX_CPU_ISA) includes it: the build's baseline is AVX2, and functions marked
// MUE_AVX512_BF16 run only where this is true.
bool native_bf16_conversion();
#define MUE_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
// The lanes of a 16-wide step with `remaining` elements left: all 16, or the first `remaining`.
inline uint16_t lane_mask16(int64_t remaining) {
  return remaining >= 16 ? uint16_t{0xFFFF} : static_cast<uint16_t>((1u << remaining) - 1u);
}
float from_bf16(uint16_t v);

// Dynamic per-row asymmetric quantisation of x [m, k] to u8: the range of each row, widened to
// hold 0, maps onto 0..255; x ~= scale[r] * (q - zero_point[r]). A zero row gets scale 1.
// With `norm`, each row is first normalised (as layer_norm() does) in a per-thread row buffer:
// the quantised LN(x), without LN(x) ever written out.
void quantize_rows_u8(const float* x, int64_t m, int64_t k, uint8_t* q, float* scale,
                      int32_t* zero_point, const RowLayerNorm* norm = nullptr);

// y[m, k] = bf16(LN(x)) row by row, LN as layer_norm() computes it. OpenMP over rows when large.
void to_bf16_normed_rows(const float* x, int64_t m, int64_t k, const RowLayerNorm& norm,
                         uint16_t* y);

// Per-tensor quantisation of a non-negative map x [n] (a feature map after ReLU) to u8 with no
// zero point: x ~= scale * q, scale = max / 255 (1 for an all-zero map). Returns the scale, or a
// negative value, the map's minimum, if some x is negative (the caller reports it). OpenMP.
float quantize_nonnegative_u8(const float* x, int64_t n, uint8_t* q);

// The largest weight magnitude int8 uses: 127, or 63 where oneDNN's ISA has no VNNI. Without
// VNNI oneDNN multiplies u8 x s8 with vpmaddubsw, which saturates a pair's sum at 16 bits
// (2 * 255 * 127 > 32767); 7-bit weights keep it exact (oneDNN's "int8 computation nuances").
int int8_weight_max();

// Symmetric per-output-channel quantisation of w [n, k] to s8 in [-qmax, qmax]:
// w ~= scale[j] * q. row_sum[j] = sum_k q[j, k], the compensation of a zero point on the input.
void quantize_weights_s8(const float* w, int64_t n, int64_t k, int qmax, int8_t* q, float* scale,
                         int32_t* row_sum);

// The int8 GEMM's epilogue: y[i, j] = act(x_scale[i] * w_scale[j] *
// (acc[i, j] - x_zero_point[i] * w_row_sum[j]) + bias[j]); act none, relu, or the exact GELU
// (as gelu() computes it, applied per block while the block is in cache). bias may be null.
enum class EpilogueActivation { kNone, kRelu, kGelu };
void dequantize_s32(const int32_t* acc, int64_t m, int64_t n, const float* x_scale,
                    const int32_t* x_zero_point, const float* w_scale, const int32_t* w_row_sum,
                    const float* bias, EpilogueActivation act, float* y);

// The int8 convolution's epilogue over one sample's NHWC map of `pixels` positions of `channels`:
// y = act(x_scale * w_scale[c] * acc + bias[c] + residual), act none or relu; bias and residual
// may be null, residual may alias y.
void dequantize_conv_s32(const int32_t* acc, int64_t pixels, int64_t channels, float x_scale,
                         const float* w_scale, const float* bias, const float* residual, bool relu,
                         float* y);

}  // namespace mue::kernels::detail
