// The bf16 and int8 conversions (quantize.h): elementwise loops, OpenMP-parallel when large.
#include "kernels/quantize.h"

#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <cstring>
#include <oneapi/dnnl/dnnl.hpp>
#include <vector>

#include "kernels/eigen.h"
#include "kernels/kernels.h"
#include "kernels/row_norm.h"

namespace mue::kernels::detail {
namespace {
constexpr int64_t kMinParallel = 1 << 16;  // elements; below this a parallel region costs more

// One normalised row, per thread: it stays in L1 between LayerNorm and the conversion.
float* normed_row_buffer(int64_t k) {
  thread_local std::vector<float> row;
  if (row.size() < static_cast<size_t>(k)) row.resize(static_cast<size_t>(k));
  return row.data();
}
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
    const __mmask16 tail = lane_mask16(n - i);
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + i), s));
    _mm256_mask_storeu_epi16(y + i, tail, std::bit_cast<__m256i>(v));
  }
}

}  // namespace

bool native_bf16_conversion() {
  // The CPU's flags, and oneDNN's effective ISA, which honours ONEDNN_MAX_CPU_ISA: capped at
  // AVX2, our kernels too behave as on an AVX2 machine.
  static const bool native = [] {
    const auto isa = dnnl::get_effective_cpu_isa();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16") &&
           (isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx);
  }();
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

namespace {

void quantize_row_portable(const float* row, int64_t k, uint8_t* out, float* scale,
                           int32_t* zero_point) {
  // Eigen's reductions vectorise; GCC left the std::min/max loop scalar (NaN ordering), and
  // it took a sixth of an int8 encoder layer. Min and max are exact in any order.
  const Eigen::Map<const Eigen::ArrayXf> values(row, k);
  const float lo = std::min(0.f, values.minCoeff()), hi = std::max(0.f, values.maxCoeff());
  const float s = hi > lo ? (hi - lo) / 255.f : 1.f;
  const int32_t zp = static_cast<int32_t>(std::nearbyint(-lo / s));
  *scale = s;
  *zero_point = zp;
  const float inv = 1.f / s, offset = static_cast<float>(zp) + 0.5f;
#pragma omp simd
  for (int64_t i = 0; i < k; ++i) {
    // x / s + zp >= -0.5 within rounding, so +0.5 and truncation round to nearest.
    const float v = std::min(std::max(row[i] * inv + offset, 0.f), 255.f);
    out[i] = static_cast<uint8_t>(static_cast<int32_t>(v));
  }
}

// The range of x [n] widened by *lo and *hi (which it updates), in AVX-512.
MUE_AVX512_BF16 void range_avx512(const float* x, int64_t n, float* lo, float* hi) {
  __m512 lo16 = _mm512_set1_ps(*lo), hi16 = _mm512_set1_ps(*hi);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = lane_mask16(n - i);
    const __m512 v = _mm512_mask_loadu_ps(lo16, mask, x + i);  // masked lanes: a value seen
    lo16 = _mm512_min_ps(lo16, v);
    hi16 = _mm512_max_ps(hi16, v);
  }
  alignas(64) float lows[16], highs[16];  // (GCC 12's _mm512_reduce_min_ps warns)
  _mm512_store_ps(lows, lo16);
  _mm512_store_ps(highs, hi16);
  *lo = *std::min_element(lows, lows + 16);
  *hi = *std::max_element(highs, highs + 16);
}

// The same in AVX-512: one pass for the range, one to quantise (x * inv + offset as one fused
// multiply-add, clamped, truncated, narrowed with vpmovdb).
MUE_AVX512_BF16 void quantize_row_avx512(const float* row, int64_t k, uint8_t* out, float* scale,
                                         int32_t* zero_point) {
  float lo = 0.f, hi = 0.f;  // the range widened to hold 0
  range_avx512(row, k, &lo, &hi);
  const float s = hi > lo ? (hi - lo) / 255.f : 1.f;
  const int32_t zp = static_cast<int32_t>(std::nearbyint(-lo / s));
  *scale = s;
  *zero_point = zp;
  const __m512 inv = _mm512_set1_ps(1.f / s), offset = _mm512_set1_ps(float(zp) + 0.5f);
  const __m512 zero = _mm512_setzero_ps(), top = _mm512_set1_ps(255.f);
  for (int64_t i = 0; i < k; i += 16) {
    const __mmask16 mask = lane_mask16(k - i);
    const __m512 v = _mm512_min_ps(
        _mm512_max_ps(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, row + i), inv, offset), zero),
        top);
    _mm_mask_storeu_epi8(out + i, mask, _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v)));
  }
}

}  // namespace

void quantize_rows_u8(const float* x, int64_t m, int64_t k, uint8_t* q, float* scale,
                      int32_t* zero_point, const RowLayerNorm* norm) {
  auto* row = native_bf16_conversion() ? quantize_row_avx512 : quantize_row_portable;
  if (norm == nullptr) {
#pragma omp parallel for schedule(static) if (m * k >= kMinParallel)
    for (int64_t r = 0; r < m; ++r) row(x + r * k, k, q + r * k, scale + r, zero_point + r);
    return;
  }
#pragma omp parallel for schedule(static) if (m * k >= kMinParallel)
  for (int64_t r = 0; r < m; ++r) {
    float* normed = normed_row_buffer(k);
    layer_norm_row(x + r * k, norm->gamma, norm->beta, normed, k, norm->eps);
    row(normed, k, q + r * k, scale + r, zero_point + r);
  }
}

void to_bf16_normed_rows(const float* x, int64_t m, int64_t k, const RowLayerNorm& norm,
                         uint16_t* y) {
#pragma omp parallel for schedule(static) if (m * k >= kMinParallel)
  for (int64_t r = 0; r < m; ++r) {
    float* normed = normed_row_buffer(k);
    layer_norm_row(x + r * k, norm.gamma, norm.beta, normed, k, norm.eps);
    to_bf16_serial(normed, 1.f, y + r * k, k);
  }
}

namespace {

MUE_AVX512_BF16 void quantize_nonnegative_avx512(const float* x, int64_t n, float inv, uint8_t* q) {
  const __m512 vinv = _mm512_set1_ps(inv), half = _mm512_set1_ps(0.5f), top = _mm512_set1_ps(255.f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = lane_mask16(n - i);
    const __m512 v =
        _mm512_min_ps(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, x + i), vinv, half), top);
    _mm_mask_storeu_epi8(q + i, mask, _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v)));
  }
}

}  // namespace

float quantize_nonnegative_u8(const float* x, int64_t n, uint8_t* q) {
  const bool native = native_bf16_conversion();
  float lo = 0.f, hi = 0.f;
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  // (clang-format would break the reduction clauses apart)
  // clang-format off
#pragma omp parallel for schedule(static) reduction(min : lo) reduction(max : hi) \
    if (n >= kMinParallel)
  // clang-format on
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t count = std::min(kChunk, n - c * kChunk);
    if (native) {
      float chunk_lo = 0.f, chunk_hi = 0.f;
      range_avx512(x + c * kChunk, count, &chunk_lo, &chunk_hi);
      lo = std::min(lo, chunk_lo);
      hi = std::max(hi, chunk_hi);
    } else {
      const Eigen::Map<const Eigen::ArrayXf> values(x + c * kChunk, count);
      lo = std::min(lo, values.minCoeff());
      hi = std::max(hi, values.maxCoeff());
    }
  }
  if (lo < 0.f) return lo;
  const float scale = hi > 0.f ? hi / 255.f : 1.f, inv = 1.f / scale;
  if (native) {
#pragma omp parallel for schedule(static) if (n >= kMinParallel)
    for (int64_t c = 0; c < chunks; ++c) {
      quantize_nonnegative_avx512(x + c * kChunk, std::min(kChunk, n - c * kChunk), inv,
                                  q + c * kChunk);
    }
    return scale;
  }
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

namespace {

void dequantize_row_portable(const int32_t* a, int64_t n, float xs, int32_t zp,
                             const float* w_scale, const int32_t* w_row_sum, const float* bias,
                             EpilogueActivation act, float* out) {
  const bool relu = act == EpilogueActivation::kRelu;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    float v = xs * w_scale[j] * static_cast<float>(a[j] - zp * w_row_sum[j]);
    if (bias != nullptr) v += bias[j];
    out[j] = relu ? std::max(v, 0.f) : v;
  }
  if (act == EpilogueActivation::kGelu) {
    // One pass fewer over the FFN's widest output than a separate gelu() (same expression).
    Eigen::Map<Eigen::ArrayXf> v(out, n);
    v = 0.5f * v * (1.f + (v * static_cast<float>(M_SQRT1_2)).erf());
  }
}

// exp(x) for x <= 0, 16 lanes: 2^(x log2 e) split into 2^whole (exponent bits) times 2^f,
// f in [-0.5, 0.5], by a degree-6 polynomial (relative error about 2e-7); 0 below -87.
MUE_AVX512_BF16 inline __attribute__((always_inline)) __m512 exp_nonpositive_16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
  const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
  const __m512 whole = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, whole), _mm512_set1_ps(0.693147180559945309f));
  // exp(g) on |g| <= ln2 / 2 by its Taylor series to g^6
  __m512 p = _mm512_set1_ps(1.f / 720.f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 120.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 24.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 6.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, whole);
}

// GELU(v) = v / 2 (1 + erf(v / sqrt 2)), erf by Abramowitz and Stegun 7.1.26 (absolute error
// below 1.5e-7): erf(|z|) = 1 - t P(t) exp(-z^2), t = 1 / (1 + 0.3275911 |z|).
MUE_AVX512_BF16 inline __attribute__((always_inline)) __m512 gelu_16(__m512 v) {
  const __m512 z = _mm512_mul_ps(v, _mm512_set1_ps(static_cast<float>(M_SQRT1_2)));
  const __m512 az = _mm512_abs_ps(z);
  const __m512 t = _mm512_div_ps(
      _mm512_set1_ps(1.f), _mm512_fmadd_ps(az, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.f)));
  __m512 p = _mm512_set1_ps(1.061405429f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
  p = _mm512_mul_ps(p, t);
  const __m512 e = exp_nonpositive_16(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), az), az));
  const __m512 erf_abs = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.f));  // 1 - p e
  // erf is odd: the sign of z
  const __m512 erf = _mm512_castsi512_ps(
      _mm512_or_si512(_mm512_castps_si512(erf_abs),
                      _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(INT32_MIN))));
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v),
                       _mm512_add_ps(_mm512_set1_ps(1.f), erf));
}

MUE_AVX512_BF16 void dequantize_row_avx512(const int32_t* a, int64_t n, float xs, int32_t zp,
                                           const float* w_scale, const int32_t* w_row_sum,
                                           const float* bias, EpilogueActivation act, float* out) {
  const __m512 vxs = _mm512_set1_ps(xs);
  const __m512i vzp = _mm512_set1_epi32(zp);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 mask = lane_mask16(n - j);
    const __m512i acc = _mm512_maskz_loadu_epi32(mask, a + j);
    const __m512i sum = _mm512_maskz_loadu_epi32(mask, w_row_sum + j);
    const __m512 q = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, _mm512_mullo_epi32(vzp, sum)));
    __m512 v = _mm512_mul_ps(_mm512_mul_ps(vxs, _mm512_maskz_loadu_ps(mask, w_scale + j)), q);
    if (bias != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, bias + j));
    if (act == EpilogueActivation::kRelu) v = _mm512_max_ps(v, _mm512_setzero_ps());
    if (act == EpilogueActivation::kGelu) v = gelu_16(v);
    _mm512_mask_storeu_ps(out + j, mask, v);
  }
}

}  // namespace

namespace {

MUE_AVX512_BF16 double sum_exp_shifted_avx512(const float* x, int64_t n, float max) {
  const __m512 shift = _mm512_set1_ps(max);
  __m512d low = _mm512_setzero_pd(), high = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = lane_mask16(n - i);
    // masked lanes: exp(-inf) = 0 (the polynomial's input is clamped at -87: about 2e-38)
    const __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), mask, x + i);
    const __m512 e = _mm512_maskz_mov_ps(mask, exp_nonpositive_16(_mm512_sub_ps(v, shift)));
    low = _mm512_add_pd(low, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    high = _mm512_add_pd(
        high,
        _mm512_cvtps_pd(_mm256_castsi256_ps(_mm512_extracti64x4_epi64(_mm512_castps_si512(e), 1))));
  }
  alignas(64) double lanes[8];  // (GCC 12's _mm512_reduce_add_pd warns)
  _mm512_store_pd(lanes, _mm512_add_pd(low, high));
  double sum = 0;
  for (double lane : lanes) sum += lane;
  return sum;
}

}  // namespace

void dequantize_s32(const int32_t* acc, int64_t m, int64_t n, const float* x_scale,
                    const int32_t* x_zero_point, const float* w_scale, const int32_t* w_row_sum,
                    const float* bias, EpilogueActivation act, float* y) {
  const bool native = native_bf16_conversion();
  // Columns in blocks so that the decoder's few rows of a wide output still split over threads.
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for collapse(2) schedule(static) if (m * n >= kMinParallel)
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t begin = b * kBlock, count = std::min(n, begin + kBlock) - begin;
      auto* row = native ? dequantize_row_avx512 : dequantize_row_portable;
      row(acc + r * n + begin, count, x_scale[r], x_zero_point[r], w_scale + begin,
          w_row_sum + begin, bias != nullptr ? bias + begin : nullptr, act, y + r * n + begin);
    }
  }
}

namespace {

MUE_AVX512_BF16 void dequantize_conv_row_avx512(const int32_t* a, int64_t channels, float xs,
                                                const float* w_scale, const float* bias,
                                                const float* res, bool relu, float* out) {
  const __m512 vxs = _mm512_set1_ps(xs);
  for (int64_t c = 0; c < channels; c += 16) {
    const __mmask16 mask = lane_mask16(channels - c);
    __m512 v = _mm512_mul_ps(_mm512_mul_ps(vxs, _mm512_maskz_loadu_ps(mask, w_scale + c)),
                             _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(mask, a + c)));
    if (bias != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, bias + c));
    if (res != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, res + c));
    if (relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
    _mm512_mask_storeu_ps(out + c, mask, v);
  }
}

}  // namespace

void dequantize_conv_s32(const int32_t* acc, int64_t pixels, int64_t channels, float x_scale,
                         const float* w_scale, const float* bias, const float* residual, bool relu,
                         float* y) {
  const bool native = native_bf16_conversion();
#pragma omp parallel for schedule(static) if (pixels * channels >= kMinParallel)
  for (int64_t r = 0; r < pixels; ++r) {
    const float xs = x_scale;
    const int32_t* a = acc + r * channels;
    const float* res = residual != nullptr ? residual + r * channels : nullptr;
    float* out = y + r * channels;
    if (native) {
      dequantize_conv_row_avx512(a, channels, xs, w_scale, bias, res, relu, out);
      continue;
    }
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

namespace mue::kernels {

double sum_exp_shifted(const float* x, int64_t n, float max, bool fast) {
  if (fast && detail::native_bf16_conversion()) return detail::sum_exp_shifted_avx512(x, n, max);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(x[i] - max);
  return sum;
}

}  // namespace mue::kernels
