#include <gtest/gtest.h>

#include "mue/tensor.h"

namespace mue {

TEST(Tensor, EmptyIsAlignedAndShaped) {
  Tensor t = Tensor::empty({3, 5});
  EXPECT_EQ(t.rank(), 2);
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(t.dim(-1), 5);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % kAlignment, 0u);
}

TEST(Tensor, ReshapeAndSliceShareMemory) {
  Tensor t = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {3, 2});
  Tensor r = t.reshape({2, 3});
  EXPECT_EQ(r.data<float>(), t.data<float>());
  Tensor s = t.slice_rows(1, 3);
  EXPECT_EQ(s.dim(0), 2);
  EXPECT_FLOAT_EQ(s.data<float>()[0], 2.f);
}

TEST(Tensor, BadUseNamesTheProblem) {
  Tensor t = Tensor::zeros({2, 2});
  EXPECT_THROW(t.reshape({3}), Error);
  EXPECT_THROW(t.slice_rows(1, 3), Error);
  EXPECT_THROW(t.data<int64_t>(), Error);
  try {
    t.reshape({5});
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2,2]"), std::string::npos);
  }
}

}  // namespace mue
