#include "mue/tensor.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace mue {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
      return 2;
    case DType::kBF16:
      return 2;
    case DType::kI8:
      return 1;
    case DType::kU8:
      return 1;
    case DType::kI32:
      return 4;
    case DType::kI64:
      return 8;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kI8:
      return "I8";
    case DType::kU8:
      return "U8";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "?";
}

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

namespace {

std::optional<int64_t> checked_numel(const Shape& shape) {
  bool empty = false, overflow = false;
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    empty |= d == 0;
    overflow |= __builtin_mul_overflow(n, d, &n);
  }
  if (empty) return 0;  // [2^62, 2^62, 0] holds nothing
  if (overflow) return std::nullopt;
  return n;
}

}  // namespace

int64_t shape_numel(const Shape& shape) {
  std::optional<int64_t> n = checked_numel(shape);
  if (!n)
    throw Error("shape " + shape_str(shape) +
                (std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 0; })
                     ? " has a negative dimension"
                     : " has more elements than int64 can count"));
  return *n;
}

std::optional<size_t> checked_nbytes(const Shape& shape, DType dtype) {
  std::optional<int64_t> n = checked_numel(shape);
  size_t bytes = 0;
  if (!n || __builtin_mul_overflow(static_cast<size_t>(*n), dtype_size(dtype), &bytes))
    return std::nullopt;
  return bytes;
}

Tensor Tensor::empty(Shape shape, DType dtype) {
  for (int64_t d : shape)
    if (d < 0) throw Error("Tensor::empty: negative dimension in shape " + shape_str(shape));
  std::optional<size_t> size = checked_nbytes(shape, dtype);
  if (!size || *size > SIZE_MAX - kAlignment)
    throw Error("Tensor::empty: shape " + shape_str(shape) + " of " + dtype_name(dtype) +
                " is too large: its byte count overflows");
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  size_t bytes = *size;
  size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, rounded == 0 ? kAlignment : rounded);
  if (!p)
    throw Error("Tensor::empty: out of memory allocating " + std::to_string(bytes) + " bytes");
  t.owner_ = std::shared_ptr<const void>(p, [](const void* q) { std::free(const_cast<void*>(q)); });
  t.data_ = p;
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype) {
  Tensor t = empty(std::move(shape), dtype);
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::view(void* data, Shape shape, DType dtype, std::shared_ptr<const void> owner) {
  Tensor t;
  t.data_ = data;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.owner_ = std::move(owner);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, Shape shape) {
  if (shape_numel(shape) != static_cast<int64_t>(values.size()))
    throw Error("Tensor::from_vector: " + std::to_string(values.size()) +
                " values do not fill shape " + shape_str(shape));
  Tensor t = empty(std::move(shape));
  std::memcpy(t.data_, values.data(), values.size() * sizeof(float));
  return t;
}

int64_t Tensor::dim(int i) const {
  int r = rank();
  int j = i < 0 ? i + r : i;
  if (j < 0 || j >= r)
    throw Error("Tensor::dim: index " + std::to_string(i) + " out of range for shape " +
                shape_str(shape_));
  return shape_[j];
}

Tensor Tensor::reshape(Shape shape) const {
  if (shape_numel(shape) != numel())
    throw Error("Tensor::reshape: cannot view " + shape_str(shape_) + " as " + shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  if (rank() == 0 || begin < 0 || end < begin || end > shape_[0])
    throw Error("Tensor::slice_rows: rows [" + std::to_string(begin) + "," + std::to_string(end) +
                ") out of range for shape " + shape_str(shape_));
  Tensor t = *this;
  int64_t row = numel() / (shape_[0] == 0 ? 1 : shape_[0]);
  t.data_ = static_cast<char*>(data_) + begin * row * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_);
  if (nbytes()) std::memcpy(t.data_, data_, nbytes());
  return t;
}

void Tensor::check_dtype(DType expected) const {
  if (expected != dtype_)
    throw Error(std::string("Tensor: element type is ") + dtype_name(dtype_) + ", accessed as " +
                dtype_name(expected));
}

}  // namespace mue
