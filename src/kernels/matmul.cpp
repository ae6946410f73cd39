// linear(): oneDNN matmul reading PyTorch [N,K] weights in place as a [K,N] operand with strides
// {1,K} (format `ba`), so no per-call transpose; bias and activation are fused into the primitive.
// PackedLinear: the same matmul on weights reordered once into the layout oneDNN asks for, in
// the compute type's precision (mue/compute_type.h): bf16 weights and inputs with fp32 output, or
// s8 weights and u8 inputs with an s32 output that our epilogue scales back to fp32.
#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/dnnl_context.h"
#include "kernels/kernels.h"
#include "kernels/quantize.h"
#include "kernels/row_norm.h"

namespace mue::kernels {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using DataType = memory::data_type;
constexpr auto kF32 = DataType::f32;

// int8 row block (see PackedLinear::Impl::forward_int8).
constexpr int64_t kInt8RowBlock = 128;

struct LinearKey {
  int64_t m, n, k;
  bool has_bias;
  Activation act;
  int threads;
  bool packed;  // weights in oneDNN's chosen layout rather than PyTorch's
  ComputeType type = ComputeType::kF32;
  bool operator==(const LinearKey&) const = default;
};

struct LinearKeyHash {
  size_t operator()(const LinearKey& key) const {
    size_t h = std::hash<int64_t>()(key.m);
    detail::hash_mix(h, std::hash<int64_t>()(key.n));
    detail::hash_mix(h, std::hash<int64_t>()(key.k));
    detail::hash_mix(h, key.has_bias);
    detail::hash_mix(h, static_cast<size_t>(key.act));
    detail::hash_mix(h, static_cast<size_t>(key.threads));
    detail::hash_mix(h, key.packed);
    detail::hash_mix(h, static_cast<size_t>(key.type));
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

// Operand types per compute type: f32 throughout; bf16 in, fp32 out; u8 x s8 -> s32, whose
// scaling, bias and activation our epilogue applies (oneDNN 2.6 matmul has no per-row scales).
struct LinearTypes {
  DataType src, weights, dst;
};
LinearTypes linear_types(ComputeType type) {
  switch (type) {
    case ComputeType::kBF16:
      return {DataType::bf16, DataType::bf16, kF32};
    case ComputeType::kInt8:
      return {DataType::u8, DataType::s8, DataType::s32};
    default:
      return {kF32, kF32, kF32};
  }
}

LinearPrimitive make_linear(const LinearKey& key) {
  const LinearTypes types = linear_types(key.type);
  const bool int8 = key.type == ComputeType::kInt8;
  // PyTorch [N,K] row-major is exactly [K,N] with strides {1,K}.
  const memory::desc weights({key.k, key.n}, types.weights, key.packed ? Tag::any : Tag::ba);
  LinearPrimitive p;
  p.src = memory::desc({key.m, key.k}, types.src, Tag::ab);
  p.dst = memory::desc({key.m, key.n}, types.dst, Tag::ab);
  p.bias = key.has_bias && !int8 ? memory::desc({1, key.n}, kF32, Tag::ab) : memory::desc();
  dnnl::primitive_attr attr = detail::user_scratchpad_attr();
  if (!int8) attr.set_post_ops(activation_post_ops(key.act));
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

void run_linear(const LinearPrimitive& p, const void* x, const memory& weights, const memory& bias,
                void* y) {
  auto& engine = detail::cpu_engine();
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, memory(p.src, engine, const_cast<void*>(x))},
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
  ComputeType type = ComputeType::kF32;
  memory bias;     // owned copy [1,N], or empty (int8 keeps it in bias_int8)
  memory weights;  // packed at construction for M=1, then read-only
  // int8: per-output-channel weight scales, sums of each channel's s8 weights (the input zero
  // point's compensation) and the fp32 bias, all for the epilogue.
  std::vector<float> weight_scale, bias_int8;
  std::vector<int32_t> weight_row_sum;
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

  size_t weight_bytes() const {
    size_t bytes = weights.get_desc().get_size() + (bias ? bias.get_desc().get_size() : 0) +
                   weight_scale.size() * sizeof(float) + bias_int8.size() * sizeof(float) +
                   weight_row_sum.size() * sizeof(int32_t);
    std::lock_guard<std::mutex> lock(mutex);
    for (const memory& m : other_layouts) bytes += m.get_desc().get_size();
    return bytes;
  }

  void forward_int8(const float* x, float* y, int64_t m, Activation act,
                    const FusedRows& fused) const {
    // Tall inputs (the image stream's 900 tokens) go in row blocks, one per thread at a time:
    // each block's s32 product (128 x 3072 x 4 bytes = 1.5 MB) is scaled back while it is still
    // in that core's L2, where one product over all rows wrote 11 MB to memory and read it back.
    // Rows are independent (per-row scales, exact s32 sums), so the result is the same bits.
    const int threads = detail::current_threads();
    if (m >= 2 * kInt8RowBlock && threads > 1 && !omp_in_parallel()) {
      const int64_t blocks = (m + kInt8RowBlock - 1) / kInt8RowBlock;
      const int64_t rows = (m + blocks - 1) / blocks;  // even blocks: no short straggler
      std::exception_ptr failure;                      // exceptions may not leave an OpenMP region
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t first = b * rows, count = std::min(rows, m - first);
        try {
          // Looked up (and created) inside the region: oneDNN sizes it for the one thread there.
          const LinearPrimitive block =
              cached_linear({count, n, k, false, Activation::kNone, 1, true, ComputeType::kInt8});
          FusedRows rows = fused;
          if (rows.residual != nullptr) rows.residual += first * n;
          forward_int8_rows(block, x + first * k, y + first * n, count, act, rows);
        } catch (...) {
#pragma omp critical(mue_int8_row_block_failure)
          if (!failure) failure = std::current_exception();
        }
      }
      if (failure) std::rethrow_exception(failure);
      return;
    }
    // The epilogue owns bias and activation, so one primitive serves every layer of a shape.
    forward_int8_rows(
        cached_linear({m, n, k, false, Activation::kNone, threads, true, ComputeType::kInt8}), x, y,
        m, act, fused);
  }

  void forward_int8_rows(const LinearPrimitive& p, const float* x, float* y, int64_t m,
                         Activation act, const FusedRows& fused) const {
    auto* q = static_cast<uint8_t*>(detail::thread_buffer(0, m * k));
    auto* scale = static_cast<float*>(detail::thread_buffer(1, m * sizeof(float)));
    auto* zero_point = static_cast<int32_t*>(detail::thread_buffer(2, m * sizeof(int32_t)));
    auto* acc = static_cast<int32_t*>(detail::thread_buffer(3, m * n * sizeof(int32_t)));
    detail::quantize_rows_u8(x, m, k, q, scale, zero_point, fused.input_norm);
    run_linear(p, q, weights_as(p.weights), memory(), acc);
    using Epilogue = detail::EpilogueActivation;
    const Epilogue epilogue = act == Activation::kRelu   ? Epilogue::kRelu
                              : act == Activation::kGelu ? Epilogue::kGelu
                                                         : Epilogue::kNone;
    detail::dequantize_s32(acc, m, n, scale, zero_point, weight_scale.data(), weight_row_sum.data(),
                           bias_int8.empty() ? nullptr : bias_int8.data(), epilogue, y);
    // Inside a row block's region these rows are still in this core's L2.
    detail::normalize_add_rows(y, m, n, fused.output_norm, fused.residual, !omp_in_parallel());
  }
};

PackedLinear::PackedLinear() : impl_(nullptr) {}

PackedLinear::PackedLinear(const float* weight, const float* bias, int64_t n, int64_t k,
                           ComputeType type)
    : impl_(nullptr) {
  if (n <= 0 || k <= 0) {
    throw Error("PackedLinear: bad shape n=" + std::to_string(n) + " k=" + std::to_string(k) +
                " (need n > 0, k > 0)");
  }
  if (weight == nullptr) throw Error("PackedLinear: null weight pointer");
  auto impl = std::make_unique<Impl>();
  impl->n = n;
  impl->k = k;
  impl->type = resolve_compute_type(type);
  const bool int8 = impl->type == ComputeType::kInt8;
  try {
    auto& engine = detail::cpu_engine();
    if (bias != nullptr && int8) {
      impl->bias_int8.assign(bias, bias + n);
    } else if (bias != nullptr) {
      impl->bias = memory({{1, n}, kF32, Tag::ab}, engine);
      std::memcpy(impl->bias.get_data_handle(), bias, n * sizeof(float));
    }
    const LinearPrimitive p = cached_linear({1, n, k, !int8 && bias != nullptr, Activation::kNone,
                                             detail::current_threads(), true, impl->type});
    // bf16: the reorder rounds the fp32 weights (to nearest even); int8: quantised here first.
    memory plain({{k, n}, kF32, Tag::ba}, engine, const_cast<float*>(weight));
    std::vector<int8_t> quantised;
    if (int8) {
      quantised.resize(static_cast<size_t>(n * k));
      impl->weight_scale.resize(n);
      impl->weight_row_sum.resize(n);
      detail::quantize_weights_s8(weight, n, k, detail::int8_weight_max(), quantised.data(),
                                  impl->weight_scale.data(), impl->weight_row_sum.data());
      plain = memory({{k, n}, DataType::s8, Tag::ba}, engine, quantised.data());
    }
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
ComputeType PackedLinear::compute_type() const {
  return impl_ != nullptr ? impl_->type : ComputeType::kF32;
}
size_t PackedLinear::weight_bytes() const { return impl_ != nullptr ? impl_->weight_bytes() : 0; }

void PackedLinear::forward(const float* x, float* y, int64_t m, Activation act,
                           const FusedRows& fused) const {
  if (impl_ == nullptr) throw Error("PackedLinear: forward on an empty or moved-from layer");
  check_linear_args("PackedLinear", x, true, y, m, impl_->n, impl_->k);
  if (m == 0) return;
  if (fused.residual != nullptr && fused.residual == y) {
    throw Error("PackedLinear: the residual to add must not be the output itself");
  }
  try {
    if (impl_->type == ComputeType::kInt8) {  // looks up its primitives per row block
      impl_->forward_int8(x, y, m, act, fused);
      return;
    }
    const LinearPrimitive p = cached_linear({m, impl_->n, impl_->k, bool(impl_->bias), act,
                                             detail::current_threads(), true, impl_->type});
    const int64_t count = m * impl_->k;
    const RowLayerNorm* norm = fused.input_norm;
    if (impl_->type == ComputeType::kBF16) {
      auto* x16 = static_cast<uint16_t*>(detail::thread_buffer(0, count * sizeof(uint16_t)));
      if (norm != nullptr) {
        detail::to_bf16_normed_rows(x, m, impl_->k, *norm, x16);
      } else {
        detail::to_bf16(x, x16, count);
      }
      run_linear(p, x16, impl_->weights_as(p.weights), impl_->bias, y);
    } else if (norm != nullptr) {
      auto* normed = static_cast<float*>(detail::thread_buffer(0, count * sizeof(float)));
      layer_norm(x, norm->gamma, norm->beta, normed, m, impl_->k, norm->eps);
      run_linear(p, normed, impl_->weights_as(p.weights), impl_->bias, y);
    } else {
      run_linear(p, x, impl_->weights_as(p.weights), impl_->bias, y);
    }
    detail::normalize_add_rows(y, m, impl_->n, fused.output_norm, fused.residual, true);
  } catch (const dnnl::error& e) {
    detail::rethrow_dnnl("PackedLinear", e);
  }
}

}  // namespace mue::kernels
