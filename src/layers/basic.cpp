#include "layers/basic.h"

#include <algorithm>

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

Linear Linear::load_stacked(WeightStore& w, const std::vector<std::string>& prefixes, int64_t out,
                            int64_t in, ComputeType type) {
  const int64_t parts = static_cast<int64_t>(prefixes.size());
  Linear l;
  l.out = parts * out;
  l.in = in;
  // A load-time copy only: the packed layer below is what stays resident.
  std::vector<float> weight(static_cast<size_t>(l.out * in)), bias(static_cast<size_t>(l.out));
  for (int64_t p = 0; p < parts; ++p) {
    const Tensor wp = w.get(prefixes[p] + ".weight", {out, in});
    const Tensor bp = w.get(prefixes[p] + ".bias", {out});
    std::copy_n(wp.data<float>(), out * in, weight.data() + p * out * in);
    std::copy_n(bp.data<float>(), out, bias.data() + p * out);
  }
  l.packed = std::make_shared<kernels::PackedLinear>(weight.data(), bias.data(), l.out, in, type);
  return l;
}

void Linear::forward(const float* x, float* y, int64_t rows, kernels::Activation act,
                     const LinearFusion& fused) const {
  if (rows == 0) return;
  auto row_norm = [](const LayerNorm* norm, int64_t width, const char* side) {
    if (norm != nullptr && norm->dim != width) {
      throw Error(std::string("Linear: a LayerNorm of width ") + std::to_string(norm->dim) +
                  " on the " + side + " of a layer " + std::to_string(width) + " wide");
    }
    return norm != nullptr ? kernels::RowLayerNorm{norm->weight.data<float>(),
                                                   norm->bias.data<float>(), norm->eps}
                           : kernels::RowLayerNorm{};
  };
  const kernels::RowLayerNorm input = row_norm(fused.input_norm, in, "input");
  const kernels::RowLayerNorm output = row_norm(fused.output_norm, out, "output");
  kernels::FusedRows rows_ops;
  rows_ops.input_norm = fused.input_norm != nullptr ? &input : nullptr;
  rows_ops.output_norm = fused.output_norm != nullptr ? &output : nullptr;
  rows_ops.residual = fused.residual;
  packed->forward(x, y, rows, act, rows_ops);
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
