#include "layers/basic.h"

namespace mue {

Linear Linear::load(WeightStore& w, const std::string& prefix, int64_t out, int64_t in,
                    bool with_bias, ComputeType type) {
  Linear l;
  l.out = out;
  l.in = in;
  const Tensor weight = w.get(prefix + ".weight", {out, in});
  const Tensor bias = with_bias ? w.get(prefix + ".bias", {out}) : Tensor();
  l.packed = std::make_shared<kernels::PackedLinear>(
      weight.data<float>(), with_bias ? bias.data<float>() : nullptr, out, in, type);
  return l;
}

void Linear::forward(const float* x, float* y, int64_t rows, kernels::Activation act) const {
  if (rows == 0) return;
  packed->forward(x, y, rows, act);
}

LayerNorm LayerNorm::load(WeightStore& w, const std::string& prefix, int64_t dim, float eps) {
  LayerNorm n;
  n.dim = dim;
  n.eps = eps;
  n.weight = w.get(prefix + ".weight", {dim});
  n.bias = w.get(prefix + ".bias", {dim});
  return n;
}

void LayerNorm::forward(const float* x, float* y, int64_t rows) const {
  if (rows == 0) return;
  kernels::layer_norm(x, weight.data<float>(), bias.data<float>(), y, rows, dim, eps);
}

}  // namespace mue
