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

// issue 18: the element count wrapped around int64, and the byte count of [2^62] F32 to 0.
TEST(Tensor, ShapesWhoseCountsOverflowAreRefused) {
  const int64_t big = int64_t{1} << 62;
  try {
    shape_numel({big, 4});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[4611686018427387904,4]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(shape_numel({3, -1}), Error);
  EXPECT_THROW(shape_numel({big, 2}), Error);  // 2^63: one past INT64_MAX
  EXPECT_EQ(shape_numel({big / 2, 3}), big / 2 * 3);
  EXPECT_EQ(shape_numel({big, big, 0}), 0);  // empty, however long its other dimensions

  EXPECT_EQ(checked_nbytes({2, 3}, DType::kF32), 24u);
  EXPECT_EQ(checked_nbytes({big}, DType::kF32), std::nullopt);    // 2^64 bytes
  EXPECT_EQ(checked_nbytes({big, 2}, DType::kU8), std::nullopt);  // 2^63 elements
  EXPECT_EQ(checked_nbytes({big / 2}, DType::kF32), size_t{1} << 63);
  EXPECT_EQ(checked_nbytes({big, big, 0}, DType::kI64), 0u);
  EXPECT_EQ(checked_nbytes({-2}, DType::kF32), std::nullopt);

  try {
    Tensor::empty({big}, DType::kF32);
    ADD_FAILURE() << "a [2^62] F32 tensor was allocated";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[4611686018427387904] of F32 is too large"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace mue
