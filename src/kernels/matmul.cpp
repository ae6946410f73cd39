// linear(): oneDNN matmul reading PyTorch [N,K] weights in place as a [K,N] operand with strides
// {1,K} (format `ba`), so no per-call transpose; bias and activation are fused into the primitive.
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

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

LinearPrimitive make_linear(const LinearKey& key, const memory::desc& weights) {
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
  if (it == cache.end()) {
    // PyTorch [N,K] row-major is exactly [K,N] with strides {1,K}.
    it = cache.emplace(key, make_linear(key, memory::desc({key.k, key.n}, kF32, Tag::ba))).first;
  }
  return it->second;
}

void run_linear(const LinearPrimitive& p, const float* x, const float* w, const float* bias,
                float* y) {
  auto& engine = detail::cpu_engine();
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, memory(p.src, engine, const_cast<float*>(x))},
      {DNNL_ARG_WEIGHTS, memory(p.weights, engine, const_cast<float*>(w))},
      {DNNL_ARG_DST, memory(p.dst, engine, y)},
      {DNNL_ARG_SCRATCHPAD, detail::thread_scratchpad(p.scratchpad)}};
  if (bias != nullptr)
    args.emplace(DNNL_ARG_BIAS, memory(p.bias, engine, const_cast<float*>(bias)));
  p.matmul.execute(detail::cpu_stream(), args);
  detail::cpu_stream().wait();
}

void check_linear_args(const char* what, const float* x, const float* w, float* y, int64_t m,
                       int64_t n, int64_t k) {
  if (m < 0 || n <= 0 || k <= 0) {
    throw Error(std::string(what) + ": bad shape m=" + std::to_string(m) + " n=" +
                std::to_string(n) + " k=" + std::to_string(k) + " (need m >= 0, n > 0, k > 0)");
  }
  if (m > 0 && (x == nullptr || w == nullptr || y == nullptr)) {
    throw Error(std::string(what) + ": null input, weight or output pointer");
  }
}

}  // namespace

void linear(const float* x, const float* w, const float* bias, float* y, int64_t m, int64_t n,
            int64_t k, Activation act) {
  check_linear_args("linear", x, w, y, m, n, k);
  if (m == 0) return;
  try {
    const LinearKey key{m, n, k, bias != nullptr, act, detail::current_threads()};
    run_linear(cached_linear(key), x, w, bias, y);
  } catch (const dnnl::error& e) {
    detail::rethrow_dnnl("linear", e);
  }
}

}  // namespace mue::kernels
