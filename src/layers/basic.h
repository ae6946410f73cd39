// Linear and LayerNorm layers: views of the checkpoint's tensors plus the kernel calls.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/weights.h"
#include "kernels/kernels.h"

namespace mue {

// Bytes a weight tensor holds (0 when undefined).
inline size_t held_bytes(const Tensor& t) { return t.raw() != nullptr ? t.nbytes() : 0; }

struct LayerNorm;

// Row-wise work Linear::forward does around its product (kernels::FusedRows), each part
// optional: y = output_norm(act(input_norm(x) W^T + b)) + residual, the same bits as running the
// LayerNorms and the add separately, with fewer passes over memory under bf16 and int8.
struct LinearFusion {
  const LayerNorm* input_norm = nullptr;
  const LayerNorm* output_norm = nullptr;
  const float* residual = nullptr;  // [rows, out], not y itself
};

struct Linear {
  int64_t out = 0, in = 0;
  // The checkpoint's [out, in] weights and bias reordered once at load into oneDNN's blocked
  // layout (STYLE.md: layout work at load), in the compute type's precision; 2-2.6x faster at the
  // decoder's M = 1..5 than repacking per call. The checkpoint's own copy is not kept.
  std::shared_ptr<kernels::PackedLinear> packed;

  static Linear load(WeightStore& w, const std::string& prefix, int64_t out, int64_t in,
                     bool with_bias = true, ComputeType type = ComputeType::kF32);
  // Several [out, in] linears of one input stacked into one [parts * out, in] (q, k and v): one
  // GEMM, and under int8 one quantisation of the input, where there were `parts`. Output rows
  // are [part 0 | part 1 | ...], each `out` wide.
  static Linear load_stacked(WeightStore& w, const std::vector<std::string>& prefixes, int64_t out,
                             int64_t in, ComputeType type = ComputeType::kF32);
  // y[rows, out] = act(x[rows, in] W^T + b), with `fused` as above.
  void forward(const float* x, float* y, int64_t rows,
               kernels::Activation act = kernels::Activation::kNone,
               const LinearFusion& fused = {}) const;
  size_t weight_bytes() const { return packed ? packed->weight_bytes() : 0; }
};

struct LayerNorm {
  Tensor weight, bias;  // [dim]
  int64_t dim = 0;
  float eps = 1e-5f;

  static LayerNorm load(WeightStore& w, const std::string& prefix, int64_t dim, float eps);
  void forward(const float* x, float* y, int64_t rows) const;
  size_t weight_bytes() const { return held_bytes(weight) + held_bytes(bias); }
};

}  // namespace mue
