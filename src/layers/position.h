// OFA's position machinery (spec 3.4): relative-position buckets, the per-layer relative bias
// tables. The absolute-position bias itself is kernels::add_projected_position_bias.
#pragma once

#include <cstdint>
#include <vector>

#include "mue/tensor.h"

namespace mue {

// Bucket of the token distance i - j (OFA make_token_bucket_position), already offset into
// the [2*bucket_size-1] table.
int64_t token_rel_bucket(int64_t i, int64_t j, int64_t bucket_size, int64_t max_position);

// Bucket for two image patches at grid cells (r1,c1) and (r2,c2) (OFA make_image_bucket_position
// restricted to real patches, whose position ids are r*bucket+c+1).
int64_t image_rel_bucket(int64_t r1, int64_t c1, int64_t r2, int64_t c2, int64_t bucket_size);

// Image position ids r*bucket+c+1 for an h x w grid, row-major.
std::vector<int64_t> image_position_ids(int64_t grid_h, int64_t grid_w, int64_t bucket_size);

}  // namespace mue
