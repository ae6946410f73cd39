// Linear and LayerNorm layers: views of the checkpoint's tensors plus the kernel calls.
#pragma once

#include <memory>
#include <string>

#include "kernels/kernels.h"
#include "io/weights.h"

namespace mue {

struct Linear {
  Tensor weight;  // [out, in], PyTorch layout: a view of the checkpoint
  Tensor bias;    // [out] or undefined
  int64_t out = 0, in = 0;
  // The same weights reordered once at load into oneDNN's blocked layout (STYLE.md: layout work
  // at load); 2-2.6x faster at the decoder's M = 1..5 than repacking per call.
  std::shared_ptr<kernels::PackedLinear> packed;

  static Linear load(WeightStore& w, const std::string& prefix, int64_t out, int64_t in,
                     bool with_bias = true);
  // y[rows, out] = act(x[rows, in] W^T + b)
  void forward(const float* x, float* y, int64_t rows,
               kernels::Activation act = kernels::Activation::kNone) const;
};

struct LayerNorm {
  Tensor weight, bias;  // [dim]
  int64_t dim = 0;
  float eps = 1e-5f;

  static LayerNorm load(WeightStore& w, const std::string& prefix, int64_t dim, float eps);
  void forward(const float* x, float* y, int64_t rows) const;
};

}  // namespace mue
