// linear(): oneDNN matmul reading PyTorch [N,K] weights in place as a [K,N] operand with strides
// {1,K} (format `ba`), so no per-call transpose; bias and activation are fused into the primitive.
// PackedLinear: the same matmul on weights reordered once into the layout oneDNN asks for.
#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/dnnl_context.h"
#include "kernels/kernels.h"

namespace mue::kernels {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
constexpr auto kF32 = memory::data_type::f32;

struct LinearKey {
  int64_t m, n, k;
  bool has_bias;
  Activation act;
  int threads;
  bool packed;  // weights in oneDNN's chosen layout rather than PyTorch's
  bool operator==(const LinearKey&) const = default;
};

struct LinearKeyHash {
  size_t operator()(const LinearKey& key) const {
    size_t h = std::hash<int64_t>()(key.m);
    auto mix = [&h](size_t v) { h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2); };
    mix(std::hash<int64_t>()(key.n));
    mix(std::hash<int64_t>()(key.k));
    mix(key.has_bias);
    mix(static_cast<size_t>(key.act));
    mix(static_cast<size_t>(key.threads));
    mix(key.packed);
    return h;
  }
};

struct LinearPrimitive {
  dnnl::matmul matmul;
  memory::desc src, weights, bias, dst, scratchpad;
};

dnnl::post_ops activation_post_ops(Activation act) {
  dnnl::post_ops ops;
  // eltwise_gelu_erf is the exact erf GELU (spec 3.4 FFN), not the tanh approximation.
  if (act == Activation::kRelu) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  if (act == Activation::kGelu) {
    ops.append_eltwise(1.f, dnnl::algorithm::eltwise_gelu_erf, 0.f, 0.f);
  }
  return ops;
}

LinearPrimitive make_linear(const LinearKey& key) {
  // PyTorch [N,K] row-major is exactly [K,N] with strides {1,K}.
  const memory::desc weights({key.k, key.n}, kF32, key.packed ? Tag::any : Tag::ba);
  LinearPrimitive p;
  p.src = memory::desc({key.m, key.k}, kF32, Tag::ab);
  p.dst = memory::desc({key.m, key.n}, kF32, Tag::ab);
  p.bias = key.has_bias ? memory::desc({1, key.n}, kF32, Tag::ab) : memory::desc();
  dnnl::primitive_attr attr = detail::user_scratchpad_attr();
  attr.set_post_ops(activation_post_ops(key.act));
  dnnl::matmul::desc desc(p.src, weights, p.bias, p.dst);
  dnnl::matmul::primitive_desc pd(desc, attr, detail::cpu_engine());
  p.weights = pd.weights_desc();
  p.scratchpad = pd.scratchpad_desc();
  p.matmul = dnnl::matmul(pd);
  return p;
}

// Cached per shape: creating a primitive descriptor costs far more than a decoding-step GEMV.
LinearPrimitive cached_linear(const LinearKey& key) {
  static std::mutex mutex;
  static std::unordered_map<LinearKey, LinearPrimitive, LinearKeyHash> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, make_linear(key)).first;
  return it->second;
}

void run_linear(const LinearPrimitive& p, const float* x, const memory& weights, const memory& bias,
                float* y) {
  auto& engine = detail::cpu_engine();
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, memory(p.src, engine, const_cast<float*>(x))},
      {DNNL_ARG_WEIGHTS, weights},
      {DNNL_ARG_DST, memory(p.dst, engine, y)},
      {DNNL_ARG_SCRATCHPAD, detail::thread_scratchpad(p.scratchpad)}};
  if (bias) args.emplace(DNNL_ARG_BIAS, bias);
  p.matmul.execute(detail::cpu_stream(), args);
  detail::cpu_stream().wait();
}

void check_linear_args(const char* what, const float* x, bool has_weights, float* y, int64_t m,
                       int64_t n, int64_t k) {
  if (m < 0 || n <= 0 || k <= 0) {
    throw Error(std::string(what) + ": bad shape m=" + std::to_string(m) + " n=" +
                std::to_string(n) + " k=" + std::to_string(k) + " (need m >= 0, n > 0, k > 0)");
  }
  if (m > 0 && (x == nullptr || !has_weights || y == nullptr)) {
    throw Error(std::string(what) + ": null input, weight or output pointer");
  }
}

}  // namespace

void linear(const float* x, const float* w, const float* bias, float* y, int64_t m, int64_t n,
            int64_t k, Activation act) {
  check_linear_args("linear", x, w != nullptr, y, m, n, k);
  if (m == 0) return;
  try {
    const LinearKey key{m, n, k, bias != nullptr, act, detail::current_threads(), false};
    const LinearPrimitive p = cached_linear(key);
    auto& engine = detail::cpu_engine();
    const memory bias_memory =
        bias != nullptr ? memory(p.bias, engine, const_cast<float*>(bias)) : memory();
    run_linear(p, x, memory(p.weights, engine, const_cast<float*>(w)), bias_memory, y);
  } catch (const dnnl::error& e) {
    detail::rethrow_dnnl("linear", e);
  }
}

struct PackedLinear::Impl {
  int64_t n = 0, k = 0;
  memory bias;     // owned copy [1,N], or empty
  memory weights;  // packed at construction for M=1, then read-only
  // oneDNN 2.6 picks the same blocked layout for every M; should a batch size want another one,
  // it is reordered from `weights` once and kept here.
  mutable std::mutex mutex;
  mutable std::vector<memory> other_layouts;

  memory weights_as(const memory::desc& desc) const {
    if (desc == weights.get_desc()) return weights;
    std::lock_guard<std::mutex> lock(mutex);
    for (const memory& m : other_layouts) {
      if (m.get_desc() == desc) return m;
    }
    memory source = weights, converted(desc, detail::cpu_engine());
    dnnl::reorder(source, converted).execute(detail::cpu_stream(), source, converted);
    detail::cpu_stream().wait();
    other_layouts.push_back(converted);
    return converted;
  }
};

PackedLinear::PackedLinear() : impl_(nullptr) {}

PackedLinear::PackedLinear(const float* weight, const float* bias, int64_t n, int64_t k)
    : impl_(nullptr) {
  if (n <= 0 || k <= 0) {
    throw Error("PackedLinear: bad shape n=" + std::to_string(n) + " k=" + std::to_string(k) +
                " (need n > 0, k > 0)");
  }
  if (weight == nullptr) throw Error("PackedLinear: null weight pointer");
  auto impl = std::make_unique<Impl>();
  impl->n = n;
  impl->k = k;
  try {
    auto& engine = detail::cpu_engine();
    if (bias != nullptr) {
      impl->bias = memory({{1, n}, kF32, Tag::ab}, engine);
      std::memcpy(impl->bias.get_data_handle(), bias, n * sizeof(float));
    }
    const LinearPrimitive p = cached_linear(
        {1, n, k, bias != nullptr, Activation::kNone, detail::current_threads(), true});
    memory plain({{k, n}, kF32, Tag::ba}, engine, const_cast<float*>(weight));
    impl->weights = memory(p.weights, engine);
    dnnl::reorder(plain, impl->weights).execute(detail::cpu_stream(), plain, impl->weights);
    detail::cpu_stream().wait();
  } catch (const dnnl::error& e) {
    detail::rethrow_dnnl("PackedLinear", e);
  }
  impl_ = impl.release();
}

PackedLinear::~PackedLinear() { delete impl_; }
PackedLinear::PackedLinear(PackedLinear&& other) noexcept : impl_(other.impl_) {
  other.impl_ = nullptr;
}
PackedLinear& PackedLinear::operator=(PackedLinear&& other) noexcept {
  if (this != &other) {
    delete impl_;
    impl_ = other.impl_;
    other.impl_ = nullptr;
  }
  return *this;
}

int64_t PackedLinear::out_features() const { return impl_ != nullptr ? impl_->n : 0; }
int64_t PackedLinear::in_features() const { return impl_ != nullptr ? impl_->k : 0; }

void PackedLinear::forward(const float* x, float* y, int64_t m, Activation act) const {
  if (impl_ == nullptr) throw Error("PackedLinear: forward on an empty or moved-from layer");
  check_linear_args("PackedLinear", x, true, y, m, impl_->n, impl_->k);
  if (m == 0) return;
  try {
    const LinearPrimitive p = cached_linear(
        {m, impl_->n, impl_->k, bool(impl_->bias), act, detail::current_threads(), true});
    run_linear(p, x, impl_->weights_as(p.weights), impl_->bias, y);
  } catch (const dnnl::error& e) {
    detail::rethrow_dnnl("PackedLinear", e);
  }
}

}  // namespace mue::kernels
