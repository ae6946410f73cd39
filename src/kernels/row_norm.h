// Internal to src/kernels: one row's LayerNorm, shared by layer_norm() and the kernels that
// normalise rows as they convert or finish them (PackedLinear::forward with FusedRows), so
// both give the same bits.
#pragma once

#include <cstdint>

namespace mue::kernels {
struct RowLayerNorm;
}  // namespace mue::kernels

namespace mue::kernels::detail {

// y[cols] = (x - mean) / sqrt(var + eps) * gamma + beta; gamma/beta may be null; x may be y.
void layer_norm_row(const float* x, const float* gamma, const float* beta, float* y, int64_t cols,
                    float eps);

// y[m, n] -> LN(y) (norm may be null) + residual (may be null; must not alias y), row by row,
// as layer_norm() and then an add: the same bits. OpenMP over rows when `parallel` and large.
void normalize_add_rows(float* y, int64_t m, int64_t n, const RowLayerNorm* norm,
                        const float* residual, bool parallel);

}  // namespace mue::kernels::detail
