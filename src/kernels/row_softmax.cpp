// The attention weights' row pass (row_softmax.h): the portable loop, and the same in AVX-512
// with the CPU's own bf16 conversion, chosen once at run time. The build's baseline is AVX2, and
// the bf16 attention path runs only on CPUs with native bf16 (AVX512-BF16 or AMX), where this
// pass over 900 x 900 scores per head was the largest of our own kernels in the image stream.
#include "kernels/row_softmax.h"

#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>

namespace mue::kernels::detail {
namespace {

float softmax_weights_bf16_portable(const float* x, int64_t n, uint16_t* y) {
  const float max = Eigen::Map<const Eigen::ArrayXf>(x, n).maxCoeff();
  return exp_shifted_row_bf16(x, n, max, y);
}

// exp(v - shift) for 16 lanes, as exp_shifted_row_bf16 computes it (row_softmax.h).
MUE_AVX512_BF16 inline __attribute__((always_inline)) __m512 exp_shifted_16(__m512 shift,
                                                                            __m512 v) {
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
  const __m512i minus126 = _mm512_set1_epi32(static_cast<int32_t>(0xC2FC0000u));
  const __m512 one = _mm512_set1_ps(1.f), c0 = _mm512_set1_ps(0.99992522f),
               c1 = _mm512_set1_ps(0.69583351f), c2 = _mm512_set1_ps(0.22606725f),
               c3 = _mm512_set1_ps(0.07802446f);
  const __m512i bits = _mm512_castps_si512(_mm512_mul_ps(_mm512_sub_ps(v, shift), log2e));
  const __m512 t = _mm512_castsi512_ps(_mm512_min_epu32(bits, minus126));
  const __m512i whole = _mm512_cvttps_epi32(t);
  const __m512 g = _mm512_add_ps(_mm512_sub_ps(t, _mm512_cvtepi32_ps(whole)), one);
  const __m512 p = _mm512_fmadd_ps(g, _mm512_fmadd_ps(g, _mm512_fmadd_ps(g, c3, c2), c1), c0);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(
                              _mm512_add_epi32(whole, _mm512_set1_epi32(126)), 23)));
}

// exp_shifted_row_bf16's arithmetic, 16 lanes at a time. Masked tails: the lanes past n neither
// store nor add. vcvtneps2bf16 rounds to nearest even, as bf16_bits does (the values are never
// NaN or subnormal: p * 2^(whole - 1) is 0 or at least 2^-126).
MUE_AVX512_BF16 float softmax_weights_bf16_avx512(const float* x, int64_t n, uint16_t* y) {
  const __m512 minus_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 vmax = minus_inf;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(x + j));
  const __mmask16 tail = lane_mask16(n - j);
  if (j < n) vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(minus_inf, tail, x + j));
  const float max = _mm512_reduce_max_ps(vmax);
  if (max == -std::numeric_limits<float>::infinity()) {
    std::fill_n(y, n, uint16_t{0});
    return 0.f;
  }
  const __m512 shift = _mm512_set1_ps(max);
  __m512 sum = _mm512_setzero_ps();
  for (j = 0; j + 16 <= n; j += 16) {
    const __m512 e = exp_shifted_16(shift, _mm512_loadu_ps(x + j));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + j),
                        std::bit_cast<__m256i>(_mm512_cvtneps_pbh(e)));
    sum = _mm512_add_ps(sum, e);
  }
  if (j < n) {
    const __m512 e = exp_shifted_16(shift, _mm512_mask_loadu_ps(shift, tail, x + j));
    _mm256_mask_storeu_epi16(y + j, tail, std::bit_cast<__m256i>(_mm512_cvtneps_pbh(e)));
    sum = _mm512_mask_add_ps(sum, tail, sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

}  // namespace

float softmax_weights_bf16(const float* x, int64_t n, uint16_t* y, bool allow_native) {
  if (n <= 0) return 0.f;
  return allow_native && native_bf16_conversion() ? softmax_weights_bf16_avx512(x, n, y)
                                                  : softmax_weights_bf16_portable(x, n, y);
}

}  // namespace mue::kernels::detail
