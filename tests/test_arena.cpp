#include <gtest/gtest.h>

#include "core/arena.h"

namespace mue {

TEST(Arena, AlignedAndReusedAfterReset) {
  Arena arena;
  float* a = arena.floats(10);
  float* b = arena.floats(3);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % kAlignment, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % kAlignment, 0u);
  EXPECT_NE(a, b);
  arena.reset();
  EXPECT_EQ(arena.floats(10), a);
}

TEST(Arena, GrowsThenSettlesIntoOneBlock) {
  Arena arena;
  arena.floats(1 << 18);  // 1 MiB: fills the first block
  arena.floats(1 << 20);  // needs a second block
  EXPECT_GE(arena.capacity(), size_t{5} << 20);
  arena.reset();
  size_t cap = arena.capacity();
  float* p = arena.floats(1 << 18);
  float* q = arena.floats(1 << 20);
  EXPECT_EQ(arena.capacity(), cap);  // no new allocation in steady state
  EXPECT_EQ(q - p, 1 << 18);
}

}  // namespace mue
