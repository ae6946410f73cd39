// Tensor: a dense, row-major array that either owns aligned memory or views memory that
// something else keeps alive (a memory-mapped weight file, an arena).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace mue {

// Every error the library reports: the message names the thing and the reason.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class DType : uint8_t { kF32, kF16, kBF16, kI8, kU8, kI32, kI64 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::kF32;
}
template <>
constexpr DType dtype_of<int8_t>() {
  return DType::kI8;
}
template <>
constexpr DType dtype_of<uint8_t>() {
  return DType::kU8;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::kI32;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::kI64;
}

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& shape);
// The element count; throws mue::Error naming the shape when a dimension is negative or the count
// overflows int64.
int64_t shape_numel(const Shape& shape);
// The byte size of a `dtype` tensor of `shape`, or nullopt when a dimension is negative or the
// element count or byte count overflows: for shapes read from files, which must not wrap around.
std::optional<size_t> checked_nbytes(const Shape& shape, DType dtype);

constexpr size_t kAlignment = 64;

class Tensor {
 public:
  Tensor() = default;

  // Uninitialised, 64-byte aligned, owned.
  static Tensor empty(Shape shape, DType dtype = DType::kF32);
  static Tensor zeros(Shape shape, DType dtype = DType::kF32);
  // A view of `data`; `owner` (may be null) keeps the memory alive.
  static Tensor view(void* data, Shape shape, DType dtype,
                     std::shared_ptr<const void> owner = nullptr);
  static Tensor from_vector(const std::vector<float>& values, Shape shape);

  bool defined() const { return data_ != nullptr || numel() == 0; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  // Size of dimension i; negative i counts from the end.
  int64_t dim(int i) const;
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <typename T>
  T* data() {
    check_dtype(dtype_of<T>());
    return static_cast<T*>(data_);
  }
  template <typename T>
  const T* data() const {
    check_dtype(dtype_of<T>());
    return static_cast<const T*>(data_);
  }

  // Same memory, new shape (numel must match). Shares ownership.
  Tensor reshape(Shape shape) const;
  // Rows [begin, end) of the first dimension, as a view sharing ownership.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // Deep copy into owned memory.
  Tensor clone() const;
  const std::shared_ptr<const void>& owner() const { return owner_; }

 private:
  void check_dtype(DType expected) const;

  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::kF32;
  std::shared_ptr<const void> owner_;
};

}  // namespace mue
