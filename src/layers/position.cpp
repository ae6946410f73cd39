#include "layers/position.h"

#include <cmath>

namespace mue {

int64_t token_rel_bucket(int64_t i, int64_t j, int64_t bucket_size, int64_t max_position) {
  int64_t rel = i - j;
  int64_t mid = bucket_size / 2;
  int64_t abs_pos = (rel < mid && rel > -mid) ? mid - 1 : std::llabs(rel);
  int64_t bucket;
  if (abs_pos <= mid) {
    bucket = rel;
  } else {
    // Logarithmic buckets beyond the exact window, computed in fp32 as the reference does.
    float ratio = std::log(static_cast<float>(abs_pos) / static_cast<float>(mid)) /
                  std::log(static_cast<float>(max_position - 1) / static_cast<float>(mid));
    int64_t log_pos = static_cast<int64_t>(std::ceil(ratio * static_cast<float>(mid - 1))) + mid;
    bucket = rel > 0 ? log_pos : -log_pos;
  }
  return bucket + bucket_size - 1;
}

int64_t image_rel_bucket(int64_t r1, int64_t c1, int64_t r2, int64_t c2, int64_t bucket_size) {
  int64_t dr = r1 - r2 + bucket_size - 1;
  int64_t dc = c1 - c2 + bucket_size - 1;
  return dr * (2 * bucket_size - 1) + dc;
}

std::vector<int64_t> image_position_ids(int64_t grid_h, int64_t grid_w, int64_t bucket_size) {
  std::vector<int64_t> ids(static_cast<size_t>(grid_h * grid_w));
  for (int64_t r = 0; r < grid_h; ++r)
    for (int64_t c = 0; c < grid_w; ++c) ids[r * grid_w + c] = r * bucket_size + c + 1;
  return ids;
}

}  // namespace mue
