// OFA's image backbone (spec 3.3): torchvision ResNet v1.5 stem and stages 1-3, BatchNorm folded
// into the convolutions at load. Activations are NHWC so that the output is already the
// row-major [B, h*w, C] patch sequence.
#pragma once

#include <string>
#include <vector>

#include "core/arena.h"
#include "io/weights.h"
#include "kernels/kernels.h"

namespace mue {

// A convolution followed by BatchNorm (inference statistics), folded into one convolution.
// The folded weights live in the convolution only, in the compute type's precision.
struct FoldedConv {
  std::unique_ptr<kernels::Conv2d> conv;

  static FoldedConv load(WeightStore& w, const std::string& conv_name, const std::string& bn_name,
                         int64_t out, int64_t in, int kernel, int stride, int padding, float eps,
                         ComputeType type = ComputeType::kF32);
  size_t weight_bytes() const { return conv ? conv->weight_bytes() : 0; }
};

struct Bottleneck {
  FoldedConv conv1, conv2, conv3;
  bool has_downsample = false;
  FoldedConv downsample;
};

class ResNetBackbone {
 public:
  // prefix "encoder.embed_images"; blocks per stage; stem width (64 in OFA).
  static ResNetBackbone load(WeightStore& w, const std::string& prefix,
                             const std::vector<int>& blocks, int width,
                             ComputeType type = ComputeType::kF32);
  size_t weight_bytes() const;

  int64_t out_channels() const { return out_channels_; }
  // Output grid for an input of h x w pixels.
  std::pair<int64_t, int64_t> grid(int64_t h, int64_t w) const;
  // x: [n, h, w, 3] NHWC. Writes [n, gh, gw, out_channels] into `out` (allocated by the caller).
  void forward(const float* x, int64_t n, int64_t h, int64_t w, float* out, Arena& arena) const;

 private:
  FoldedConv stem_;
  std::vector<std::vector<Bottleneck>> stages_;
  int64_t out_channels_ = 0;
};

}  // namespace mue
