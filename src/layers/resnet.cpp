#include "layers/resnet.h"

#include <algorithm>
#include <cmath>

namespace mue {

using kernels::Activation;

FoldedConv FoldedConv::load(WeightStore& w, const std::string& conv_name,
                            const std::string& bn_name, int64_t out, int64_t in, int kernel,
                            int stride, int padding, float eps, ComputeType type) {
  Tensor cw = w.get(conv_name + ".weight", {out, in, kernel, kernel});
  Tensor gamma = w.get(bn_name + ".weight", {out});
  Tensor beta = w.get(bn_name + ".bias", {out});
  Tensor mean = w.get(bn_name + ".running_mean", {out});
  Tensor var = w.get(bn_name + ".running_var", {out});
  FoldedConv f;
  Tensor weight = Tensor::empty({out, in, kernel, kernel});
  Tensor bias = Tensor::empty({out});
  int64_t per_out = in * kernel * kernel;
  const float* src = cw.data<float>();
  float* dst = weight.data<float>();
  for (int64_t o = 0; o < out; ++o) {
    // BatchNorm at inference is an affine map per channel: fold it into the filter.
    float scale = gamma.data<float>()[o] / std::sqrt(var.data<float>()[o] + eps);
    for (int64_t i = 0; i < per_out; ++i) dst[o * per_out + i] = src[o * per_out + i] * scale;
    bias.data<float>()[o] = beta.data<float>()[o] - mean.data<float>()[o] * scale;
  }
  f.conv = std::make_unique<kernels::Conv2d>(weight.data<float>(), bias.data<float>(), out, in,
                                             kernel, stride, padding, type);
  return f;
}

ResNetBackbone ResNetBackbone::load(WeightStore& w, const std::string& prefix,
                                    const std::vector<int>& blocks, int width, ComputeType type) {
  constexpr float kEps = 1e-5f;  // torch BatchNorm2d default (spec 3.3)
  ResNetBackbone net;
  // int8 convolutions take non-negative maps only (after ReLU); the stem reads the normalised
  // image, so under int8 it runs in bf16 where oneDNN has bf16, else in fp32.
  ComputeType stem_type = resolve_compute_type(type);
  if (stem_type == ComputeType::kInt8) {
    stem_type = compute_type_supported(ComputeType::kBF16) ? ComputeType::kBF16 : ComputeType::kF32;
  }
  net.stem_ =
      FoldedConv::load(w, prefix + ".conv1", prefix + ".bn1", width, 3, 7, 2, 3, kEps, stem_type);
  int64_t in = width;
  for (int s = 0; s < 3; ++s) {
    int64_t planes = static_cast<int64_t>(width) << s;
    int64_t out = planes * 4;
    int stride = s == 0 ? 1 : 2;
    std::vector<Bottleneck> stage;
    for (int b = 0; b < blocks[s]; ++b) {
      std::string p = prefix + ".layer" + std::to_string(s + 1) + "." + std::to_string(b);
      int st = b == 0 ? stride : 1;
      Bottleneck blk;
      blk.conv1 = FoldedConv::load(w, p + ".conv1", p + ".bn1", planes, in, 1, 1, 0, kEps, type);
      // v1.5: the stride sits on the 3x3 convolution.
      blk.conv2 =
          FoldedConv::load(w, p + ".conv2", p + ".bn2", planes, planes, 3, st, 1, kEps, type);
      blk.conv3 = FoldedConv::load(w, p + ".conv3", p + ".bn3", out, planes, 1, 1, 0, kEps, type);
      if (b == 0) {
        blk.has_downsample = true;
        blk.downsample = FoldedConv::load(w, p + ".downsample.0", p + ".downsample.1", out, in, 1,
                                          st, 0, kEps, type);
      }
      stage.push_back(std::move(blk));
      in = out;
    }
    net.stages_.push_back(std::move(stage));
  }
  net.out_channels_ = in;
  return net;
}

size_t ResNetBackbone::weight_bytes() const {
  size_t bytes = stem_.weight_bytes();
  for (const auto& stage : stages_)
    for (const Bottleneck& b : stage)
      bytes += b.conv1.weight_bytes() + b.conv2.weight_bytes() + b.conv3.weight_bytes() +
               (b.has_downsample ? b.downsample.weight_bytes() : 0);
  return bytes;
}

std::pair<int64_t, int64_t> ResNetBackbone::grid(int64_t h, int64_t w) const {
  auto down = [&](int64_t e) {
    e = stem_.conv->out_extent(e);
    e = kernels::max_pool_3x3_s2_extent(e);
    for (const auto& stage : stages_) e = stage[0].conv2.conv->out_extent(e);
    return e;
  };
  return {down(h), down(w)};
}

void ResNetBackbone::forward(const float* x, int64_t n, int64_t h, int64_t w, float* out,
                             Arena& arena) const {
  // Five scratch buffers, each as large as the largest activation, reused by every block.
  int64_t sh = stem_.conv->out_extent(h), sw = stem_.conv->out_extent(w);
  int64_t c = stem_.conv->out_channels();
  size_t largest = static_cast<size_t>(n * sh * sw * c);
  {
    int64_t eh = kernels::max_pool_3x3_s2_extent(sh), ew = kernels::max_pool_3x3_s2_extent(sw);
    for (const auto& stage : stages_) {
      const Bottleneck& first = stage[0];
      largest =
          std::max(largest, static_cast<size_t>(n * eh * ew * first.conv1.conv->out_channels()));
      eh = first.conv2.conv->out_extent(eh);
      ew = first.conv2.conv->out_extent(ew);
      largest =
          std::max(largest, static_cast<size_t>(n * eh * ew * first.conv3.conv->out_channels()));
    }
  }
  float* ping = arena.floats(largest);
  float* pong = arena.floats(largest);
  float* t1 = arena.floats(largest);
  float* t2 = arena.floats(largest);
  float* ds = arena.floats(largest);

  stem_.conv->forward(x, n, h, w, t1, nullptr, Activation::kRelu);
  h = kernels::max_pool_3x3_s2_extent(sh);
  w = kernels::max_pool_3x3_s2_extent(sw);
  kernels::max_pool_3x3_s2(t1, n, sh, sw, c, ping);
  float* cur = ping;

  for (size_t s = 0; s < stages_.size(); ++s) {
    for (size_t b = 0; b < stages_[s].size(); ++b) {
      const Bottleneck& blk = stages_[s][b];
      int64_t oh = blk.conv2.conv->out_extent(h), ow = blk.conv2.conv->out_extent(w);
      // Under bf16 the maps between conv1, conv2 and conv3 stay bf16 (t1, t2 hold half as many
      // bytes then): the same values as rounding fp32 outputs, without our rounding passes.
      const bool maps_bf16 = blk.conv1.conv->compute_type() == ComputeType::kBF16;
      blk.conv1.conv->forward_maps(cur, false, n, h, w, t1, maps_bf16, nullptr, Activation::kRelu);
      blk.conv2.conv->forward_maps(t1, maps_bf16, n, h, w, t2, maps_bf16, nullptr,
                                   Activation::kRelu);
      const float* identity = cur;
      if (blk.has_downsample) {
        blk.downsample.conv->forward(cur, n, h, w, ds, nullptr, Activation::kNone);
        identity = ds;
      }
      bool last = s + 1 == stages_.size() && b + 1 == stages_[s].size();
      float* next = last ? out : (cur == ping ? pong : ping);
      // relu(bn3(conv3(t2)) + identity), with the residual sum fused into the convolution.
      blk.conv3.conv->forward_maps(t2, maps_bf16, n, oh, ow, next, false, identity,
                                   Activation::kRelu);
      cur = next;
      h = oh;
      w = ow;
    }
  }
}

}  // namespace mue
