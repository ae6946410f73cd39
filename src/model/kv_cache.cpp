#include "model/kv_cache.h"

#include <cstring>
#include <string>
#include <utility>

namespace mue {

KvCache::KvCache(int layers, int64_t rows, int64_t heads, int64_t max_len, int64_t head_dim)
    : rows_(rows), capacity_(rows), heads_(heads), max_len_(max_len), head_dim_(head_dim) {
  for (int l = 0; l < layers; ++l) {
    for (auto* buffers : {&k_, &v_, &spare_k_, &spare_v_})
      buffers->push_back(Tensor::empty({rows, heads, max_len, head_dim}));
    filled_.emplace_back(static_cast<size_t>(rows), 0);
    spare_filled_.emplace_back(static_cast<size_t>(rows), 0);
  }
}

void KvCache::append(int layer, int64_t first_row, int64_t count, const float* k, const float* v,
                     int64_t stride) {
  const int64_t row_elems = heads_ * max_len_ * head_dim_;
  float* kc = k_[layer].data<float>();
  float* vc = v_[layer].data<float>();
  for (int64_t i = 0; i < count; ++i) {
    const int64_t r = first_row + i, at = filled_[layer][r];
    if (at >= max_len_)
      throw Error("decoder cache: layer " + std::to_string(layer) + " row " + std::to_string(r) +
                  " already holds all " + std::to_string(max_len_) + " positions");
    for (int64_t h = 0; h < heads_; ++h) {
      const size_t bytes = static_cast<size_t>(head_dim_) * sizeof(float);
      std::memcpy(kc + r * row_elems + (h * max_len_ + at) * head_dim_,
                  k + i * stride + h * head_dim_, bytes);
      std::memcpy(vc + r * row_elems + (h * max_len_ + at) * head_dim_,
                  v + i * stride + h * head_dim_, bytes);
    }
    filled_[layer][r] = at + 1;
  }
}

KeyValueView KvCache::view(int layer, int64_t first_row, int64_t length) const {
  const int64_t row_elems = heads_ * max_len_ * head_dim_;
  return KeyValueView{k_[layer].data<float>() + first_row * row_elems,
                      v_[layer].data<float>() + first_row * row_elems,
                      row_elems,
                      max_len_ * head_dim_,
                      head_dim_,
                      length};
}

void KvCache::reorder(const std::vector<int64_t>& src_rows) {
  const int64_t n = static_cast<int64_t>(src_rows.size());
  if (n > capacity_)
    throw Error("decoder cache: reorder to " + std::to_string(n) + " rows exceeds its capacity " +
                std::to_string(capacity_));
  for (int64_t r : src_rows)
    if (r < 0 || r >= rows_)
      throw Error("decoder cache: source row " + std::to_string(r) + " outside 0.." +
                  std::to_string(rows_ - 1));
  const int64_t row_elems = heads_ * max_len_ * head_dim_;
  for (size_t l = 0; l < k_.size(); ++l) {
    const float* ks = k_[l].data<float>();
    const float* vs = v_[l].data<float>();
    float* kd = spare_k_[l].data<float>();
    float* vd = spare_v_[l].data<float>();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t src = src_rows[i], len = filled_[l][src];
      spare_filled_[l][i] = len;
      const size_t bytes = static_cast<size_t>(len * head_dim_) * sizeof(float);
      if (bytes == 0) continue;
      for (int64_t h = 0; h < heads_; ++h) {
        const int64_t from = src * row_elems + h * max_len_ * head_dim_;
        const int64_t to = i * row_elems + h * max_len_ * head_dim_;
        std::memcpy(kd + to, ks + from, bytes);
        std::memcpy(vd + to, vs + from, bytes);
      }
    }
    std::swap(k_[l], spare_k_[l]);
    std::swap(v_[l], spare_v_[l]);
    std::swap(filled_[l], spare_filled_[l]);
  }
  rows_ = n;
}

}  // namespace mue
