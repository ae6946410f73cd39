// Threads inside the library: the OpenMP thread count of the thread running a call, and a pool
// of workers that share one loaded model.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace mue {

// Sets the calling thread's OpenMP thread count for the scope and restores it after: OpenMP
// keeps the count per thread, so an engine call must set it on the thread that runs it.
class ThreadCountScope {
 public:
  explicit ThreadCountScope(int threads);
  ~ThreadCountScope();
  ThreadCountScope(const ThreadCountScope&) = delete;
  ThreadCountScope& operator=(const ThreadCountScope&) = delete;

 private:
  int previous_;
};

// N threads taking jobs from one queue, each running its jobs with `threads_per_worker` OpenMP
// threads. Jobs run in submission order as workers come free.
class WorkerPool {
 public:
  WorkerPool(int workers, int threads_per_worker);
  ~WorkerPool();  // finishes the queued jobs, then joins
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // The future carries the job's exception, if it throws.
  std::future<void> submit(std::function<void()> job);
  int size() const { return static_cast<int>(threads_.size()); }

 private:
  void run(int threads_per_worker);
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::packaged_task<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace mue
