// KvCache (src/model/kv_cache.h): appends land at each row's fill count, views read them with
// the right strides, and reorder gathers rows (repeated, dropped) exactly as a plain copy would,
// per layer fill counts included.
#include <gtest/gtest.h>

#include <vector>

#include "model/kv_cache.h"

namespace mue {
namespace {

constexpr int64_t kHeads = 2, kMaxLen = 4, kDh = 3, kD = kHeads * kDh;

// A value that names layer, row, position, head and element.
float value(int layer, int64_t row, int64_t pos, int64_t head, int64_t e, bool is_v) {
  return static_cast<float>(layer * 10000 + row * 1000 + pos * 100 + head * 10 + e) +
         (is_v ? 0.5f : 0.f);
}

std::vector<float> position_rows(int layer, int64_t first_row, int64_t count, int64_t pos,
                                 bool is_v) {
  std::vector<float> rows(static_cast<size_t>(count * kD));
  for (int64_t i = 0; i < count; ++i)
    for (int64_t h = 0; h < kHeads; ++h)
      for (int64_t e = 0; e < kDh; ++e)
        rows[i * kD + h * kDh + e] = value(layer, first_row + i, pos, h, e, is_v);
  return rows;
}

float read(const KeyValueView& kv, int64_t row, int64_t head, int64_t pos, int64_t e, bool is_v) {
  const float* base = is_v ? kv.v : kv.k;
  return base[row * kv.batch_stride + head * kv.head_stride + pos * kv.row_stride + e];
}

TEST(KvCache, AppendsAtEachRowsFillCountAndViewsReadThem) {
  KvCache cache(2, 3, kHeads, kMaxLen, kDh);
  for (int64_t pos = 0; pos < 2; ++pos) {
    auto k = position_rows(0, 0, 3, pos, false), v = position_rows(0, 0, 3, pos, true);
    cache.append(0, 0, 3, k.data(), v.data(), kD);
  }
  // Layer 1 only for rows 1..2 (a skipped layer in `reference` mode stays shorter).
  auto k = position_rows(1, 1, 2, 0, false), v = position_rows(1, 1, 2, 0, true);
  cache.append(1, 1, 2, k.data(), v.data(), kD);
  EXPECT_EQ(cache.filled(0, 2), 2);
  EXPECT_EQ(cache.filled(1, 0), 0);
  EXPECT_EQ(cache.filled(1, 2), 1);
  KeyValueView view = cache.view(0, 1, 2);
  EXPECT_EQ(view.length, 2);
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t h = 0; h < kHeads; ++h)
      for (int64_t p = 0; p < 2; ++p)
        for (int64_t e = 0; e < kDh; ++e) {
          EXPECT_EQ(read(view, r, h, p, e, false), value(0, r + 1, p, h, e, false));
          EXPECT_EQ(read(view, r, h, p, e, true), value(0, r + 1, p, h, e, true));
        }
}

TEST(KvCache, ReorderGathersRowsLikeAPlainCopy) {
  KvCache cache(2, 4, kHeads, kMaxLen, kDh);
  for (int64_t pos = 0; pos < 3; ++pos)
    for (int layer = 0; layer < 2; ++layer) {
      // Row 3 of layer 1 skips position 2: fill counts differ per layer and row.
      int64_t count = layer == 1 && pos == 2 ? 3 : 4;
      auto k = position_rows(layer, 0, count, pos, false);
      auto v = position_rows(layer, 0, count, pos, true);
      cache.append(layer, 0, count, k.data(), v.data(), kD);
    }
  const std::vector<int64_t> src{3, 3, 0};  // repeat row 3, drop rows 1 and 2
  cache.reorder(src);
  EXPECT_EQ(cache.rows(), 3);
  for (int layer = 0; layer < 2; ++layer)
    for (int64_t i = 0; i < 3; ++i) {
      int64_t len = layer == 1 && src[i] == 3 ? 2 : 3;
      ASSERT_EQ(cache.filled(layer, i), len) << layer << " " << i;
      KeyValueView view = cache.view(layer, i, len);
      for (int64_t h = 0; h < kHeads; ++h)
        for (int64_t p = 0; p < len; ++p)
          for (int64_t e = 0; e < kDh; ++e) {
            EXPECT_EQ(read(view, 0, h, p, e, false), value(layer, src[i], p, h, e, false));
            EXPECT_EQ(read(view, 0, h, p, e, true), value(layer, src[i], p, h, e, true));
          }
    }
  // A second reorder reads the swapped buffers.
  cache.reorder({2});
  EXPECT_EQ(read(cache.view(0, 0, 3), 0, 1, 2, 1, false), value(0, 0, 2, 1, 1, false));
}

TEST(KvCache, ReorderOfEmptyRowsAndBadInputs) {
  KvCache cache(1, 2, kHeads, kMaxLen, kDh);
  cache.reorder({1, 0});  // nothing filled yet: nothing to copy, no reads of empty rows
  EXPECT_EQ(cache.filled(0, 0), 0);
  EXPECT_THROW(cache.reorder({0, 1, 1}), Error);  // more rows than the capacity
  EXPECT_THROW(cache.reorder({2}), Error);        // a row that does not exist
  std::vector<float> k(kD), v(kD);
  for (int i = 0; i < kMaxLen; ++i) cache.append(0, 0, 1, k.data(), v.data(), kD);
  EXPECT_THROW(cache.append(0, 0, 1, k.data(), v.data(), kD), Error);  // full
}

}  // namespace
}  // namespace mue
