// The decoder's self-attention cache: per layer K and V preallocated as
// [rows, heads, max_len, head_dim], indexed by integers, with a per-layer, per-row fill count
// (an early exit in `reference` mode leaves the skipped layers' caches shorter; spec 1.3).
#pragma once

#include <cstdint>
#include <vector>

#include "layers/transformer.h"
#include "mue/tensor.h"

namespace mue {

class KvCache {
 public:
  KvCache() = default;
  KvCache(int layers, int64_t rows, int64_t heads, int64_t max_len, int64_t head_dim);

  int layers() const { return static_cast<int>(k_.size()); }
  int64_t rows() const { return rows_; }
  int64_t capacity() const { return capacity_; }
  int64_t max_len() const { return max_len_; }
  int64_t filled(int layer, int64_t row) const { return filled_[layer][row]; }

  // Appends one position to `count` consecutive rows from `first_row`: K and V rows of
  // heads * head_dim elements, `stride` elements apart.
  void append(int layer, int64_t first_row, int64_t count, const float* k, const float* v,
              int64_t stride);
  // Keys and values of the rows from `first_row` (as a batch), `length` positions long.
  KeyValueView view(int layer, int64_t first_row, int64_t length) const;

  // Beam bookkeeping: row i becomes the old row src_rows[i] (rows may repeat or disappear).
  // Gathers into spare buffers allocated with the cache and swaps, so a step allocates nothing.
  void reorder(const std::vector<int64_t>& src_rows);

 private:
  int64_t rows_ = 0, capacity_ = 0, heads_ = 0, max_len_ = 0, head_dim_ = 0;
  std::vector<Tensor> k_, v_, spare_k_, spare_v_;
  std::vector<std::vector<int64_t>> filled_, spare_filled_;
};

}  // namespace mue
