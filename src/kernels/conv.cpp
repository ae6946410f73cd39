// Conv2d: oneDNN convolution on NHWC activations with the weights reordered once into the blocked
// layout oneDNN prefers (format_tag::any), bias, and residual (sum) plus activation post-ops.
// In bf16 the weights are held in bf16 from construction and the input is rounded per call;
// accumulation and output stay fp32. In int8 (for inputs that are never negative: maps after
// ReLU) the weights are s8 per output channel and each sample's input map is quantised per call
// to u8 with its own scale (so a sample's result does not depend on its batch mates); oneDNN
// multiplies u8 x s8 into s32 and our epilogue scales, adds bias and residual, and applies ReLU
// (oneDNN 2.6 takes no run-time output scales for convolutions, and these change per call).
// max_pool_3x3_s2: a plain NHWC loop, vectorised over channels.
#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/dnnl_context.h"
#include "kernels/kernels.h"
#include "kernels/quantize.h"

namespace mue::kernels {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
constexpr auto kF32 = memory::data_type::f32;

struct ConvKey {
  int64_t n, h, w;
  bool residual;
  Activation act;
  int threads;
  bool dst_bf16 = false;
  bool operator==(const ConvKey&) const = default;
};

struct ConvKeyHash {
  size_t operator()(const ConvKey& key) const {
    size_t h = std::hash<int64_t>()(key.n);
    detail::hash_mix(h, std::hash<int64_t>()(key.h));
    detail::hash_mix(h, std::hash<int64_t>()(key.w));
    detail::hash_mix(h, key.residual);
    detail::hash_mix(h, static_cast<size_t>(key.act));
    detail::hash_mix(h, static_cast<size_t>(key.threads));
    detail::hash_mix(h, key.dst_bf16);
    return h;
  }
};

struct ConvPrimitive {
  dnnl::convolution_forward conv;
  memory::desc src, dst, scratchpad;
  memory weights;  // shared with other shapes that want the same layout
};

int64_t conv_extent(int64_t in, int kernel, int stride, int padding) {
  return (in + 2 * padding - kernel) / stride + 1;
}

}  // namespace

struct Conv2d::Impl {
  int64_t out_channels = 0, in_channels = 0;
  int kernel = 0, stride = 0, padding = 0;
  ComputeType type = ComputeType::kF32;          // f32, bf16 or int8
  memory bias;                                   // owned copy, or empty
  std::vector<float> bias_values, weight_scale;  // int8: the epilogue's bias and weight scales
  std::vector<memory> weights_layouts;           // each layout some input shape asked for
  bool holds_plain_weights = false;  // weights_layouts is {the OIHW copy} until first use

  std::mutex mutex;
  std::unordered_map<ConvKey, ConvPrimitive, ConvKeyHash> primitives;

  dnnl::convolution_forward::primitive_desc make_pd(int64_t n, int64_t h, int64_t w, bool residual,
                                                    Activation act, bool dst_bf16) const {
    const int64_t ho = conv_extent(h, kernel, stride, padding);
    const int64_t wo = conv_extent(w, kernel, stride, padding);
    const bool int8 = type == ComputeType::kInt8;
    const auto in_type = type == ComputeType::kBF16 ? memory::data_type::bf16 : kF32;
    memory::desc src({n, in_channels, h, w}, int8 ? memory::data_type::u8 : in_type, Tag::nhwc);
    const auto dst_type = int8 ? memory::data_type::s32 : dst_bf16 ? memory::data_type::bf16 : kF32;
    memory::desc dst({n, out_channels, ho, wo}, dst_type, Tag::nhwc);
    memory::desc weights({out_channels, in_channels, kernel, kernel},
                         int8 ? memory::data_type::s8 : in_type, Tag::any);
    memory::desc bias_desc = bias ? bias.get_desc() : memory::desc();
    dnnl::convolution_forward::desc desc(
        dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src, weights,
        bias_desc, dst, {stride, stride}, {padding, padding}, {padding, padding});
    dnnl::post_ops ops;  // none under int8: the epilogue's
    // dst = act(conv + bias + 1 * dst_before), with dst pre-filled with the residual.
    if (residual) ops.append_sum(1.f);
    if (act == Activation::kRelu) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    if (act == Activation::kGelu) {
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_gelu_erf, 0.f, 0.f);
    }
    dnnl::primitive_attr attr = detail::user_scratchpad_attr();
    attr.set_post_ops(ops);
    return dnnl::convolution_forward::primitive_desc(desc, attr, detail::cpu_engine());
  }

  // Weights in the layout `desc`. The first request reorders the plain copy taken at construction
  // and frees it (the blocked layout depends on the feature-map size, unknown until then); a later
  // shape that wants another layout gets a reorder of the first one.
  memory weights_as(const memory::desc& desc) {
    for (const memory& m : weights_layouts) {
      if (m.get_desc() == desc) return m;
    }
    memory converted(desc, detail::cpu_engine());
    dnnl::reorder(weights_layouts.front(), converted)
        .execute(detail::cpu_stream(), weights_layouts.front(), converted);
    detail::cpu_stream().wait();
    if (holds_plain_weights) {
      weights_layouts.clear();
      holds_plain_weights = false;
    }
    weights_layouts.push_back(converted);
    return converted;
  }

  ConvPrimitive primitive(const ConvKey& key) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = primitives.find(key);
    if (it != primitives.end()) return it->second;
    auto pd = make_pd(key.n, key.h, key.w, key.residual, key.act, key.dst_bf16);
    ConvPrimitive p{dnnl::convolution_forward(pd), pd.src_desc(), pd.dst_desc(),
                    pd.scratchpad_desc(), weights_as(pd.weights_desc())};
    primitives.emplace(key, p);
    return p;
  }

  size_t weight_bytes() {
    std::lock_guard<std::mutex> lock(mutex);
    size_t bytes = bias ? bias.get_desc().get_size() : 0;
    for (const memory& m : weights_layouts) bytes += m.get_desc().get_size();
    return bytes;
  }
};

Conv2d::Conv2d(const float* weight, const float* bias, int64_t out_channels, int64_t in_channels,
               int kernel, int stride, int padding, ComputeType type)
    : impl_(new Impl) {
  std::unique_ptr<Impl> impl(impl_);  // freed if a check below throws
  if (out_channels <= 0 || in_channels <= 0 || kernel <= 0 || stride <= 0 || padding < 0) {
    throw Error("Conv2d: bad geometry out=" + std::to_string(out_channels) +
                " in=" + std::to_string(in_channels) + " kernel=" + std::to_string(kernel) +
                " stride=" + std::to_string(stride) + " padding=" + std::to_string(padding));
  }
  if (weight == nullptr) throw Error("Conv2d: null weight pointer");
  impl->out_channels = out_channels;
  impl->in_channels = in_channels;
  impl->kernel = kernel;
  impl->stride = stride;
  impl->padding = padding;
  type = resolve_compute_type(type);
  impl->type = type;
  const int64_t per_out = in_channels * kernel * kernel;
  try {
    auto& engine = detail::cpu_engine();
    if (bias != nullptr && type == ComputeType::kInt8) {
      impl->bias_values.assign(bias, bias + out_channels);  // scaled per call
    } else if (bias != nullptr) {
      impl->bias = memory({{out_channels}, kF32, Tag::a}, engine);
      std::memcpy(impl->bias.get_data_handle(), bias, out_channels * sizeof(float));
    }
    // The caller's buffer may be a temporary (BatchNorm folding), so keep a copy (in bf16 for
    // bf16: converted once, here).
    const memory::dims dims{out_channels, in_channels, kernel, kernel};
    memory plain;
    if (type == ComputeType::kInt8) {
      plain = memory({dims, memory::data_type::s8, Tag::oihw}, engine);
      impl->weight_scale.resize(out_channels);
      std::vector<int32_t> sums(out_channels);  // no zero point on the input: unused
      detail::quantize_weights_s8(weight, out_channels, per_out, detail::int8_weight_max(),
                                  static_cast<int8_t*>(plain.get_data_handle()),
                                  impl->weight_scale.data(), sums.data());
    } else if (type == ComputeType::kBF16) {
      plain = memory({dims, memory::data_type::bf16, Tag::oihw}, engine);
      detail::to_bf16(weight, static_cast<uint16_t*>(plain.get_data_handle()),
                      out_channels * per_out);
    } else {
      plain = memory({dims, kF32, Tag::oihw}, engine);
      std::memcpy(plain.get_data_handle(), weight, plain.get_desc().get_size());
    }
    impl->weights_layouts.push_back(plain);
    impl->holds_plain_weights = true;
  } catch (const dnnl::error& e) {
    detail::rethrow_dnnl("Conv2d", e);
  }
  impl.release();
}

Conv2d::~Conv2d() { delete impl_; }
Conv2d::Conv2d(Conv2d&& other) noexcept : impl_(other.impl_) { other.impl_ = nullptr; }
Conv2d& Conv2d::operator=(Conv2d&& other) noexcept {
  if (this != &other) {
    delete impl_;
    impl_ = other.impl_;
    other.impl_ = nullptr;
  }
  return *this;
}

namespace {
void check_not_moved_from(const void* impl) {
  if (impl == nullptr) throw Error("Conv2d: use of a moved-from convolution");
}
}  // namespace

int64_t Conv2d::out_extent(int64_t in_extent) const {
  check_not_moved_from(impl_);
  return conv_extent(in_extent, impl_->kernel, impl_->stride, impl_->padding);
}
int64_t Conv2d::out_channels() const {
  check_not_moved_from(impl_);
  return impl_->out_channels;
}
int64_t Conv2d::in_channels() const {
  check_not_moved_from(impl_);
  return impl_->in_channels;
}
ComputeType Conv2d::compute_type() const {
  check_not_moved_from(impl_);
  return impl_->type;
}
size_t Conv2d::weight_bytes() const {
  check_not_moved_from(impl_);
  return impl_->weight_bytes();
}

void Conv2d::forward(const float* x, int64_t n, int64_t h, int64_t w, float* y,
                     const float* residual, Activation act) const {
  forward_maps(x, false, n, h, w, y, false, residual, act);
}

void Conv2d::forward_maps(const void* x, bool x_bf16, int64_t n, int64_t h, int64_t w, void* y,
                          bool y_bf16, const float* residual, Activation act) const {
  check_not_moved_from(impl_);
  if ((x_bf16 || y_bf16) && impl_->type != ComputeType::kBF16) {
    throw Error(std::string("Conv2d: bf16 feature maps given to a convolution that runs in ") +
                compute_type_name(impl_->type));
  }
  if (y_bf16 && residual != nullptr) {
    throw Error("Conv2d: a residual needs an fp32 output, not bf16");
  }
  if (n < 0 || h <= 0 || w <= 0 || h + 2 * impl_->padding < impl_->kernel ||
      w + 2 * impl_->padding < impl_->kernel) {
    throw Error("Conv2d: input n=" + std::to_string(n) + " h=" + std::to_string(h) +
                " w=" + std::to_string(w) + " is empty or smaller than the " +
                std::to_string(impl_->kernel) + "x" + std::to_string(impl_->kernel) + " kernel");
  }
  if (n == 0) return;
  if (x == nullptr || y == nullptr) throw Error("Conv2d: null input or output pointer");
  if (impl_->type == ComputeType::kInt8) {
    forward_int8(static_cast<const float*>(x), n, h, w, static_cast<float*>(y), residual, act);
    return;
  }
  try {
    const ConvKey key{n, h, w, residual != nullptr, act, detail::current_threads(), y_bf16};
    const ConvPrimitive p = impl_->primitive(key);
    if (residual != nullptr && residual != y) {
      std::memcpy(y, residual, p.dst.get_size());
    }
    auto& engine = detail::cpu_engine();
    const void* src = x;
    if (impl_->type == ComputeType::kBF16 && !x_bf16) {
      const int64_t count = n * h * w * impl_->in_channels;
      auto* x16 = static_cast<uint16_t*>(detail::thread_buffer(0, count * sizeof(uint16_t)));
      detail::to_bf16(static_cast<const float*>(x), x16, count);
      src = x16;
    }
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, memory(p.src, engine, const_cast<void*>(src))},
        {DNNL_ARG_WEIGHTS, p.weights},
        {DNNL_ARG_DST, memory(p.dst, engine, y)},
        {DNNL_ARG_SCRATCHPAD, detail::thread_scratchpad(p.scratchpad)}};
    if (impl_->bias) args.emplace(DNNL_ARG_BIAS, impl_->bias);
    p.conv.execute(detail::cpu_stream(), args);
    detail::cpu_stream().wait();
  } catch (const dnnl::error& e) {
    detail::rethrow_dnnl("Conv2d", e);
  }
}

void Conv2d::forward_int8(const float* x, int64_t n, int64_t h, int64_t w, float* y,
                          const float* residual, Activation act) const {
  const int64_t in_count = h * w * impl_->in_channels;
  const int64_t pixels = out_extent(h) * out_extent(w), oc = impl_->out_channels;
  try {
    // One sample at a time: the per-thread u8 and s32 buffers stay one sample's size (a batch of
    // 16 would keep about 300 MB), and the maps are large enough to keep both cores busy.
    // The epilogue owns residual and activation, so one primitive serves every call shape.
    const ConvKey key{1, h, w, false, Activation::kNone, detail::current_threads(), false};
    const ConvPrimitive p = impl_->primitive(key);
    auto* q = static_cast<uint8_t*>(detail::thread_buffer(0, in_count));
    auto* acc = static_cast<int32_t*>(detail::thread_buffer(2, pixels * oc * sizeof(int32_t)));
    auto& engine = detail::cpu_engine();
    const memory src(p.src, engine, q), dst(p.dst, engine, acc);
    for (int64_t b = 0; b < n; ++b) {
      const float x_scale = detail::quantize_nonnegative_u8(x + b * in_count, in_count, q);
      if (x_scale < 0.f) {
        throw Error(
            "Conv2d: an int8 convolution needs a non-negative input (a map after ReLU); sample " +
            std::to_string(b) + " has " + std::to_string(x_scale));
      }
      p.conv.execute(detail::cpu_stream(),
                     {{DNNL_ARG_SRC, src},
                      {DNNL_ARG_WEIGHTS, p.weights},
                      {DNNL_ARG_DST, dst},
                      {DNNL_ARG_SCRATCHPAD, detail::thread_scratchpad(p.scratchpad)}});
      detail::cpu_stream().wait();
      detail::dequantize_conv_s32(acc, pixels, oc, x_scale, impl_->weight_scale.data(),
                                  impl_->bias_values.empty() ? nullptr : impl_->bias_values.data(),
                                  residual != nullptr ? residual + b * pixels * oc : nullptr,
                                  act == Activation::kRelu, y + b * pixels * oc);
    }
  } catch (const dnnl::error& e) {
    detail::rethrow_dnnl("Conv2d", e);
  }
}

int64_t max_pool_3x3_s2_extent(int64_t in_extent) {
  if (in_extent <= 0) {
    throw Error("max_pool_3x3_s2: input extent " + std::to_string(in_extent) + " is empty");
  }
  return (in_extent + 2 - 3) / 2 + 1;
}

void max_pool_3x3_s2(const float* x, int64_t n, int64_t h, int64_t w, int64_t c, float* y) {
  if (n < 0 || c < 0) throw Error("max_pool_3x3_s2: negative batch or channel count");
  const int64_t ho = max_pool_3x3_s2_extent(h), wo = max_pool_3x3_s2_extent(w);
  if (n == 0 || c == 0) return;
  if (x == nullptr || y == nullptr) throw Error("max_pool_3x3_s2: null input or output pointer");
    // Padding acts as -inf (PyTorch MaxPool2d), so only in-bounds taps count.
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t oy = 0; oy < ho; ++oy) {
      const int64_t y0 = std::max<int64_t>(0, 2 * oy - 1), y1 = std::min(h, 2 * oy + 2);
      for (int64_t ox = 0; ox < wo; ++ox) {
        const int64_t x0 = std::max<int64_t>(0, 2 * ox - 1), x1 = std::min(w, 2 * ox + 2);
        float* out = y + ((b * ho + oy) * wo + ox) * c;
        std::fill(out, out + c, -std::numeric_limits<float>::infinity());
        for (int64_t iy = y0; iy < y1; ++iy) {
          for (int64_t ix = x0; ix < x1; ++ix) {
            const float* in = x + ((b * h + iy) * w + ix) * c;
#pragma omp simd
            for (int64_t ch = 0; ch < c; ++ch) out[ch] = std::max(out[ch], in[ch]);
          }
        }
      }
    }
  }
}

}  // namespace mue::kernels
