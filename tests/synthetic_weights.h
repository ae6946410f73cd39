// The synthetic-weights recipe of tests/fixtures/SYNTHETIC_WEIGHTS.md, shared with the
// PyTorch reference (tools/synthetic_weights.py), so fixtures need not carry weights.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "mue/tensor.h"

namespace mue::testing {

inline uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// (center, spread) of the recipe's first matching rule.
inline std::pair<float, float> synthetic_range(const std::string& name, const Shape& shape) {
  if (ends_with(name, "running_var")) return {1.f, 0.2f};
  if (ends_with(name, "running_mean")) return {0.f, 0.1f};
  if (ends_with(name, "c_attn")) return {1.f, 0.2f};
  bool is_weight = ends_with(name, ".weight");
  bool is_bias = ends_with(name, ".bias");
  if (shape.size() == 1 && (is_weight || is_bias)) {
    std::string module = name.substr(0, name.rfind('.'));
    std::string last = module.substr(module.rfind('.') + 1);
    bool norm = last == "bn1" || last == "bn2" || last == "bn3" ||
                (last == "1" && contains(module, "downsample")) || contains(last, "layer_norm") ||
                contains(last, "layernorm") || ends_with(last, "_ln") || last == "attn_ln";
    if (norm) return is_weight ? std::pair{1.f, 0.2f} : std::pair{0.f, 0.1f};
  }
  for (const char* table :
       {"embed_tokens", "embed_positions", "embed_image_positions", "type_embedding",
        "token_rel_pos_table_list", "image_rel_pos_table_list"})
    if (contains(name, std::string(table) + ".") && is_weight) return {0.f, 0.5f};
  if (shape.size() >= 2) {
    int64_t fan_in = 1;
    for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
    return {0.f, static_cast<float>(std::sqrt(3.0 / static_cast<double>(fan_in)))};
  }
  return {0.f, 0.1f};
}

inline Tensor synthetic_tensor(const std::string& name, const Shape& shape, uint64_t seed) {
  Tensor t = Tensor::empty(shape);
  auto [center, spread] = synthetic_range(name, shape);
  const uint64_t golden = 0x9E3779B97F4A7C15ull;
  uint64_t key = fnv1a64(name) ^ (seed * golden);
  float* out = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    uint64_t z = key + static_cast<uint64_t>(i + 1) * golden;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    float u = static_cast<float>(z >> 40) * (1.f / 16777216.f);
    out[i] = center + spread * (2.f * u - 1.f);
  }
  return t;
}

inline void write_synthetic_model(const std::string& path,
                                  const std::vector<std::pair<std::string, Shape>>& params,
                                  uint64_t seed) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, shape] : params)
    tensors.emplace_back(name, synthetic_tensor(name, shape, seed));
  write_safetensors(path, tensors);
}

}  // namespace mue::testing
