// The bf16 and int8 conversions (quantize.h): elementwise loops, OpenMP-parallel when large.
#include "kernels/quantize.h"

#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <oneapi/dnnl/dnnl.hpp>

#include "kernels/eigen.h"

namespace mue::kernels::detail {
namespace {
constexpr int64_t kMinParallel = 1 << 16;  // elements; below this a parallel region costs more
}  // namespace

namespace {

void to_bf16_portable(const float* x, float scale, uint16_t* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_bits(scale * x[i]);
}

// vcvtneps2bf16 rounds to nearest even as bf16_bits does; it reads subnormal inputs as zero.
MUE_AVX512_BF16 void to_bf16_avx512(const float* x, float scale, uint16_t* y, int64_t n) {
  const __m512 s = _mm512_set1_ps(scale);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(x + i), s));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), std::bit_cast<__m256i>(v));
  }
  if (i < n) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + i), s));
    _mm256_mask_storeu_epi16(y + i, tail, std::bit_cast<__m256i>(v));
  }
}

}  // namespace

bool native_bf16_conversion() {
  static const bool native =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  return native;
}

void to_bf16(const float* x, uint16_t* y, int64_t n) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= kMinParallel)
  for (int64_t c = 0; c < chunks; ++c) {
    to_bf16_serial(x + c * kChunk, 1.f, y + c * kChunk, std::min(kChunk, n - c * kChunk));
  }
}

void to_bf16_serial(const float* x, float scale, uint16_t* y, int64_t n) {
  if (native_bf16_conversion()) {
    to_bf16_avx512(x, scale, y, n);
  } else {
    to_bf16_portable(x, scale, y, n);
  }
}

float from_bf16(uint16_t v) {
  const uint32_t bits = uint32_t{v} << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void quantize_rows_u8(const float* x, int64_t m, int64_t k, uint8_t* q, float* scale,
                      int32_t* zero_point) {
#pragma omp parallel for schedule(static) if (m * k >= kMinParallel)
  for (int64_t r = 0; r < m; ++r) {
    const float* row = x + r * k;
    // Eigen's reductions vectorise; GCC left the std::min/max loop scalar (NaN ordering), and
    // it took a sixth of an int8 encoder layer. Min and max are exact in any order.
    const Eigen::Map<const Eigen::ArrayXf> values(row, k);
    const float lo = std::min(0.f, values.minCoeff()), hi = std::max(0.f, values.maxCoeff());
    const float s = hi > lo ? (hi - lo) / 255.f : 1.f;
    const int32_t zp = static_cast<int32_t>(std::nearbyint(-lo / s));
    scale[r] = s;
    zero_point[r] = zp;
    const float inv = 1.f / s, offset = static_cast<float>(zp) + 0.5f;
    uint8_t* out = q + r * k;
#pragma omp simd
    for (int64_t i = 0; i < k; ++i) {
      // x / s + zp >= -0.5 within rounding, so +0.5 and truncation round to nearest.
      const float v = std::min(std::max(row[i] * inv + offset, 0.f), 255.f);
      out[i] = static_cast<uint8_t>(static_cast<int32_t>(v));
    }
  }
}

float quantize_nonnegative_u8(const float* x, int64_t n, uint8_t* q) {
  float lo = 0.f, hi = 0.f;
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  // (clang-format would break the reduction clauses apart)
  // clang-format off
#pragma omp parallel for schedule(static) reduction(min : lo) reduction(max : hi) \
    if (n >= kMinParallel)
  // clang-format on
  for (int64_t c = 0; c < chunks; ++c) {
    const Eigen::Map<const Eigen::ArrayXf> values(x + c * kChunk, std::min(kChunk, n - c * kChunk));
    lo = std::min(lo, values.minCoeff());
    hi = std::max(hi, values.maxCoeff());
  }
  if (lo < 0.f) return lo;
  const float scale = hi > 0.f ? hi / 255.f : 1.f, inv = 1.f / scale;
#pragma omp parallel for simd schedule(static) if (n >= kMinParallel)
  for (int64_t i = 0; i < n; ++i) {
    // 0 <= x / scale <= 255 within rounding: +0.5 and truncation round to nearest.
    q[i] = static_cast<uint8_t>(static_cast<int32_t>(std::min(x[i] * inv + 0.5f, 255.f)));
  }
  return scale;
}

int int8_weight_max() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::avx2_vnni:
    case dnnl::cpu_isa::avx512_core_vnni:
    case dnnl::cpu_isa::avx512_core_bf16:
    case dnnl::cpu_isa::avx512_core_amx:
      return 127;
    default:
      return 63;
  }
}

void quantize_weights_s8(const float* w, int64_t n, int64_t k, int qmax, int8_t* q, float* scale,
                         int32_t* row_sum) {
#pragma omp parallel for schedule(static) if (n * k >= kMinParallel)
  for (int64_t j = 0; j < n; ++j) {
    const float* row = w + j * k;
    float amax = 0.f;
    for (int64_t i = 0; i < k; ++i) amax = std::max(amax, std::fabs(row[i]));
    const float s = amax > 0.f ? amax / static_cast<float>(qmax) : 1.f;
    int32_t sum = 0;
    for (int64_t i = 0; i < k; ++i) {
      const int32_t v = static_cast<int32_t>(std::nearbyint(row[i] / s));
      q[j * k + i] = static_cast<int8_t>(std::clamp(v, -qmax, qmax));
      sum += q[j * k + i];
    }
    scale[j] = s;
    row_sum[j] = sum;
  }
}

void dequantize_s32(const int32_t* acc, int64_t m, int64_t n, const float* x_scale,
                    const int32_t* x_zero_point, const float* w_scale, const int32_t* w_row_sum,
                    const float* bias, EpilogueActivation act, float* y) {
  const bool relu = act == EpilogueActivation::kRelu;
  // Columns in blocks so that the decoder's few rows of a wide output still split over threads.
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for collapse(2) schedule(static) if (m * n >= kMinParallel)
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t begin = b * kBlock, end = std::min(n, begin + kBlock);
      const float xs = x_scale[r];
      const int32_t zp = x_zero_point[r];
      const int32_t* a = acc + r * n;
      float* out = y + r * n;
#pragma omp simd
      for (int64_t j = begin; j < end; ++j) {
        float v = xs * w_scale[j] * static_cast<float>(a[j] - zp * w_row_sum[j]);
        if (bias != nullptr) v += bias[j];
        out[j] = relu ? std::max(v, 0.f) : v;
      }
      if (act == EpilogueActivation::kGelu) {
        // One pass fewer over the FFN's widest output than a separate gelu() (same expression).
        Eigen::Map<Eigen::ArrayXf> v(out + begin, end - begin);
        v = 0.5f * v * (1.f + (v * static_cast<float>(M_SQRT1_2)).erf());
      }
    }
  }
}

void dequantize_conv_s32(const int32_t* acc, int64_t pixels, int64_t channels, float x_scale,
                         const float* w_scale, const float* bias, const float* residual, bool relu,
                         float* y) {
#pragma omp parallel for schedule(static) if (pixels * channels >= kMinParallel)
  for (int64_t r = 0; r < pixels; ++r) {
    const float xs = x_scale;
    const int32_t* a = acc + r * channels;
    const float* res = residual != nullptr ? residual + r * channels : nullptr;
    float* out = y + r * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      float v = xs * w_scale[c] * static_cast<float>(a[c]);
      if (bias != nullptr) v += bias[c];
      if (res != nullptr) v += res[c];
      out[c] = relu ? std::max(v, 0.f) : v;
    }
  }
}

}  // namespace mue::kernels::detail
