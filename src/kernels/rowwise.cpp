// Row-wise and element-wise kernels: layer norm, exact GELU, softmax, cosine similarity. Plain
// Eigen array expressions (vectorised), OpenMP over rows.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/eigen.h"
#include "kernels/kernels.h"
#include "kernels/row_norm.h"
#include "kernels/row_softmax.h"
#include "mue/tensor.h"

namespace mue::kernels {
namespace {

using ArrayMap = Eigen::Map<Eigen::ArrayXf>;
using ConstArrayMap = Eigen::Map<const Eigen::ArrayXf>;

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kMinParallelElements = 1 << 14;

void check_rows(const char* what, const void* x, int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0) {
    throw Error(std::string(what) + ": negative shape rows=" + std::to_string(rows) +
                " cols=" + std::to_string(cols));
  }
  if (rows * cols > 0 && x == nullptr) throw Error(std::string(what) + ": null data pointer");
}

}  // namespace

namespace detail {

void layer_norm_row(const float* x, const float* gamma, const float* beta, float* y, int64_t cols,
                    float eps) {
  ConstArrayMap in(x, cols);
  ArrayMap out(y, cols);
  // Two passes over a row that sits in L1: mean, then the biased variance (as PyTorch).
  const float mean = in.mean();
  const float var = (in - mean).square().mean();
  const float rstd = 1.f / std::sqrt(var + eps);
  // Same-index reads before writes, so x == y is safe.
  if (gamma != nullptr && beta != nullptr) {
    out = (in - mean) * rstd * ConstArrayMap(gamma, cols) + ConstArrayMap(beta, cols);
  } else if (gamma != nullptr) {
    out = (in - mean) * rstd * ConstArrayMap(gamma, cols);
  } else if (beta != nullptr) {
    out = (in - mean) * rstd + ConstArrayMap(beta, cols);
  } else {
    out = (in - mean) * rstd;
  }
}

void normalize_add_rows(float* y, int64_t m, int64_t n, const RowLayerNorm* norm,
                        const float* residual, bool parallel) {
  if (norm == nullptr && residual == nullptr) return;
#pragma omp parallel for schedule(static) if (parallel && m * n >= kMinParallelElements)
  for (int64_t r = 0; r < m; ++r) {
    float* row = y + r * n;
    if (norm != nullptr) layer_norm_row(row, norm->gamma, norm->beta, row, n, norm->eps);
    if (residual != nullptr) {
      const float* add = residual + r * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) row[j] += add[j];
    }
  }
}

}  // namespace detail

void layer_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t rows,
                int64_t cols, float eps) {
  check_rows("layer_norm", x, rows, cols);
  if (rows * cols > 0 && y == nullptr) throw Error("layer_norm: null output pointer");
  if (rows == 0 || cols == 0) return;
#pragma omp parallel for schedule(static) if (rows * cols >= kMinParallelElements)
  for (int64_t r = 0; r < rows; ++r) {
    detail::layer_norm_row(x + r * cols, gamma, beta, y + r * cols, cols, eps);
  }
}

void gelu(float* x, int64_t n) {
  if (n < 0) throw Error("gelu: negative length " + std::to_string(n));
  if (n > 0 && x == nullptr) throw Error("gelu: null data pointer");
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= kMinParallelElements)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunk;
    ArrayMap v(x + begin, std::min(kChunk, n - begin));
    // Exact GELU x * Phi(x); Eigen's vectorised float erf is accurate to a few ulp.
    v = 0.5f * v * (1.f + (v * static_cast<float>(M_SQRT1_2)).erf());
  }
}

void softmax(float* x, int64_t rows, int64_t cols) {
  check_rows("softmax", x, rows, cols);
#pragma omp parallel for schedule(static) if (rows * cols >= kMinParallelElements)
  for (int64_t r = 0; r < rows; ++r) detail::softmax_row(x + r * cols, cols);
}

double cosine_similarity(const float* a, const float* b, int64_t n) {
  if (n < 0) throw Error("cosine_similarity: negative length " + std::to_string(n));
  if (n > 0 && (a == nullptr || b == nullptr)) throw Error("cosine_similarity: null vector");
  // Fixed chunks summed in order: the result does not depend on the thread count, so exit
  // decisions (spec 1.8) are reproducible.
  constexpr int64_t kChunk = 8192;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> dot(chunks), norm_a(chunks), norm_b(chunks);
#pragma omp parallel for schedule(static) if (n >= 8 * kChunk)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunk, end = std::min(n, begin + kChunk);
    double ab = 0, aa = 0, bb = 0;
#pragma omp simd reduction(+ : ab, aa, bb)
    for (int64_t i = begin; i < end; ++i) {
      const double ai = a[i], bi = b[i];
      ab += ai * bi;
      aa += ai * ai;
      bb += bi * bi;
    }
    dot[c] = ab;
    norm_a[c] = aa;
    norm_b[c] = bb;
  }
  double ab = 0, aa = 0, bb = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    ab += dot[c];
    aa += norm_a[c];
    bb += norm_b[c];
  }
  if (aa == 0 || bb == 0) return 0;
  return ab / (std::sqrt(aa) * std::sqrt(bb));
}

}  // namespace mue::kernels
