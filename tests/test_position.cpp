#include <gtest/gtest.h>

#include "layers/position.h"

namespace mue {
namespace {

TEST(TokenRelBucket, ExactWindowIsOffsetDistance) {
  // Within +-128 the bucket is i - j + 255 (spec 3.4).
  EXPECT_EQ(token_rel_bucket(0, 0, 256, 1024), 255);
  EXPECT_EQ(token_rel_bucket(5, 2, 256, 1024), 258);
  EXPECT_EQ(token_rel_bucket(2, 5, 256, 1024), 252);
  EXPECT_EQ(token_rel_bucket(128, 0, 256, 1024), 383);
}

TEST(TokenRelBucket, LogarithmicBeyondTheWindow) {
  // sign * (ceil(log(d/128) / log(1023/128) * 127) + 128) + 255
  EXPECT_EQ(token_rel_bucket(129, 0, 256, 1024), 255 + 129);  // ceil(0.00376*127)=1 -> 129
  EXPECT_EQ(token_rel_bucket(1023, 0, 256, 1024), 255 + 255);
  EXPECT_EQ(token_rel_bucket(0, 1023, 256, 1024), 255 - 255);
  EXPECT_EQ(token_rel_bucket(256, 0, 256, 1024), 255 + 128 + 43);  // log2/log(7.99)*127=42.4
}

TEST(ImageRelBucket, MatchesOfaIndexing) {
  // idx = (dr + 41) * 83 + (dc + 41) for bucket 42
  EXPECT_EQ(image_rel_bucket(0, 0, 0, 0, 42), 41 * 83 + 41);
  EXPECT_EQ(image_rel_bucket(1, 0, 0, 2, 42), 42 * 83 + 39);
  EXPECT_EQ(image_position_ids(2, 3, 42), (std::vector<int64_t>{1, 2, 3, 43, 44, 45}));
}

}  // namespace
}  // namespace mue
