// Activation arena: a bump allocator whose memory is kept across calls. After a call that
// needed more than one block, reset() merges them, so steady state is one allocation-free block.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "mue/tensor.h"

namespace mue {

class Arena {
 public:
  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // 64-byte aligned, uninitialised, valid until reset().
  float* floats(size_t n);
  template <typename T>
  T* alloc(size_t n) {
    return static_cast<T*>(bytes(n * sizeof(T)));
  }
  void* bytes(size_t n);
  // A tensor view of arena memory, valid until reset().
  Tensor tensor(Shape shape);
  void reset();
  size_t capacity() const;

  // A position to rewind to: scopes nest, and an inner scope frees only what it allocated.
  struct Mark {
    size_t block = 0, offset = 0, used_total = 0;
  };
  Mark mark() const;
  void rewind(const Mark& m);
  size_t used() const { return used_total_; }

 private:
  struct Block {
    std::unique_ptr<std::byte, void (*)(void*)> data{nullptr, nullptr};
    size_t size = 0;
    size_t used = 0;
  };
  void add_block(size_t min_size);
  std::vector<Block> blocks_;
  size_t current_ = 0;  // block that allocations come from
  size_t used_total_ = 0;
  size_t peak_ = 0;
};

// Frees what was allocated inside the scope when it ends; the outermost scope resets the arena
// (which merges its blocks for the next call).
class ArenaScope {
 public:
  explicit ArenaScope(Arena& a) : arena_(a), mark_(a.mark()) {}
  ~ArenaScope() {
    if (mark_.used_total == 0)
      arena_.reset();
    else
      arena_.rewind(mark_);
  }
  ArenaScope(const ArenaScope&) = delete;
  ArenaScope& operator=(const ArenaScope&) = delete;

 private:
  Arena& arena_;
  Arena::Mark mark_;
};

// A call's scratch: the caller's arena when it gives one, else an arena of the call's own; what
// the call allocates is freed when it ends.
class CallScratch {
 public:
  explicit CallScratch(Arena* given) : arena_(given ? given : &own_), scope_(*arena_) {}
  CallScratch(const CallScratch&) = delete;
  CallScratch& operator=(const CallScratch&) = delete;
  Arena& operator*() { return *arena_; }

 private:
  Arena own_;
  Arena* arena_;
  ArenaScope scope_;
};

// Arenas lent to calls: every concurrent call gets scratch memory of its own, and an arena goes
// back to the pool (keeping its grown block) when the call ends.
class ArenaPool {
 public:
  class Lease {
   public:
    Lease(ArenaPool& pool, std::unique_ptr<Arena> arena) : pool_(&pool), arena_(std::move(arena)) {}
    Lease(Lease&&) noexcept = default;
    ~Lease() {
      if (arena_) pool_->give_back(std::move(arena_));
    }
    Arena& operator*() const { return *arena_; }
    Arena* get() const { return arena_.get(); }

   private:
    ArenaPool* pool_;
    std::unique_ptr<Arena> arena_;
  };
  Lease acquire();

 private:
  void give_back(std::unique_ptr<Arena> arena);
  std::mutex mutex_;
  std::vector<std::unique_ptr<Arena>> free_;
};

}  // namespace mue
