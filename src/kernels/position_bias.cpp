// The absolute-position attention bias: one small GEMM per head (Eigen: these are [T, dh] x
// [dh, T] products done at load or once per call, not in the layer loop).
#include <Eigen/Dense>

#include "kernels/kernels.h"

namespace mue::kernels {

void add_projected_position_bias(const float* q, const float* k, int64_t tq, int64_t tk,
                                 int64_t heads, int64_t head_dim, float* bias, int64_t ld) {
  using Strided =
      Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0,
                 Eigen::OuterStride<>>;
  using Out = Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0,
                         Eigen::OuterStride<>>;
  int64_t d = heads * head_dim;
  for (int64_t h = 0; h < heads; ++h) {
    Strided qh(q + h * head_dim, tq, head_dim, Eigen::OuterStride<>(d));
    Strided kh(k + h * head_dim, tk, head_dim, Eigen::OuterStride<>(d));
    Out out(bias + h * tq * ld, tq, tk, Eigen::OuterStride<>(ld));
    out.noalias() += qh * kh.transpose();
  }
}

}  // namespace mue::kernels
