#include "core/arena.h"

#include <algorithm>
#include <cstdlib>

namespace mue {

void Arena::add_block(size_t min_size) {
  size_t size = std::max<size_t>(min_size, size_t{1} << 20);
  size = (size + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, size);
  if (!p) throw Error("Arena: out of memory allocating " + std::to_string(size) + " bytes");
  Block b;
  b.data = std::unique_ptr<std::byte, void (*)(void*)>(static_cast<std::byte*>(p), std::free);
  b.size = size;
  blocks_.push_back(std::move(b));
}

void* Arena::bytes(size_t n) {
  n = (n + kAlignment - 1) / kAlignment * kAlignment;
  if (n == 0) n = kAlignment;
  while (current_ < blocks_.size() && blocks_[current_].size - blocks_[current_].used < n)
    ++current_;
  if (current_ == blocks_.size()) add_block(n);
  Block& b = blocks_[current_];
  void* p = b.data.get() + b.used;
  b.used += n;
  used_total_ += n;
  peak_ = std::max(peak_, used_total_);
  return p;
}

float* Arena::floats(size_t n) { return static_cast<float*>(bytes(n * sizeof(float))); }

Tensor Arena::tensor(Shape shape) {
  size_t n = static_cast<size_t>(shape_numel(shape));
  return Tensor::view(floats(n), std::move(shape), DType::kF32);
}

void Arena::reset() {
  if (blocks_.size() > 1) {
    blocks_.clear();
    add_block(peak_);
  }
  for (auto& b : blocks_) b.used = 0;
  current_ = 0;
  used_total_ = 0;
}

Arena::Mark Arena::mark() const {
  if (blocks_.empty() || used_total_ == 0) return {};
  return {current_, blocks_[std::min(current_, blocks_.size() - 1)].used, used_total_};
}

void Arena::rewind(const Mark& m) {
  for (size_t i = m.block + 1; i < blocks_.size(); ++i) blocks_[i].used = 0;
  if (m.block < blocks_.size()) blocks_[m.block].used = m.offset;
  current_ = m.block;
  used_total_ = m.used_total;
}

size_t Arena::capacity() const {
  size_t c = 0;
  for (const auto& b : blocks_) c += b.size;
  return c;
}

ArenaPool::Lease ArenaPool::acquire() {
  std::unique_ptr<Arena> arena;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!free_.empty()) {
      arena = std::move(free_.back());
      free_.pop_back();
    }
  }
  if (!arena) arena = std::make_unique<Arena>();
  return Lease(*this, std::move(arena));
}

void ArenaPool::give_back(std::unique_ptr<Arena> arena) {
  arena->reset();
  std::lock_guard<std::mutex> lock(mutex_);
  free_.push_back(std::move(arena));
}

}  // namespace mue
