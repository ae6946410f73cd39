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

namespace mue {

TEST(Arena, InnerScopeFreesOnlyItsOwnAllocations) {
  Arena arena;
  ArenaScope outer(arena);
  float* a = arena.floats(100);
  a[99] = 7.f;
  float* inner_small;
  {
    ArenaScope inner(arena);
    inner_small = arena.floats(10);
    arena.floats(1 << 20)[0] = 1.f;  // forces a second block
  }
  float* b = arena.floats(100);
  EXPECT_NE(a, b);
  EXPECT_EQ(a[99], 7.f);
  EXPECT_EQ(b, inner_small) << "the inner scope's memory is reused";
}

}  // namespace mue
