#include "core/threads.h"

#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>

#include "mue/runtime.h"

namespace mue {
namespace {

// What adopt_openmp_wait_policy sets: idle OpenMP threads spin 1000 times, then sleep. libgomp's
// default (300,000 spins) made OFA-base 3.2x slower beside one busy process on 2 cores, PASSIVE
// made the default model's calls 2-5x slower on a quiet machine (waking sleeping threads costs
// more than its small layers); 1000 spins kept both close (bench/README.md, "Under load").
constexpr const char* kOpenmpSpinCount = "1000";

}  // namespace

int hardware_threads() {
  // The affinity mask, not the machine's core count: a container or taskset may allow fewer.
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

void set_num_threads(int n) {
  // oneDNN in Debian is built on OpenMP, so one setting governs both.
  omp_set_num_threads(n > 0 ? n : hardware_threads());
}

int num_threads() { return omp_get_max_threads(); }

void adopt_openmp_wait_policy(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (std::getenv("MUE_OPENMP_REEXEC")) return;  // set below: never loop
  ::setenv("GOMP_SPINCOUNT", kOpenmpSpinCount, 1);
  ::setenv("MUE_OPENMP_REEXEC", "1", 1);
  ::execv("/proc/self/exe", argv);
  // exec failed (no /proc?): run on with libgomp's defaults.
  ::unsetenv("GOMP_SPINCOUNT");
}

ThreadCountScope::ThreadCountScope(int threads) : previous_(omp_get_max_threads()) {
  if (threads > 0 && threads != previous_) omp_set_num_threads(threads);
}

ThreadCountScope::~ThreadCountScope() {
  if (omp_get_max_threads() != previous_) omp_set_num_threads(previous_);
}

WorkerPool::WorkerPool(int workers, int threads_per_worker) {
  for (int i = 0; i < workers; ++i)
    threads_.emplace_back([this, threads_per_worker] { run(threads_per_worker); });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (std::thread& t : threads_) t.join();
}

std::future<void> WorkerPool::submit(std::function<void()> job) {
  std::packaged_task<void()> task(std::move(job));
  std::future<void> done = task.get_future();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(std::move(task));
  }
  ready_.notify_one();
  return done;
}

void WorkerPool::run(int threads_per_worker) {
  omp_set_num_threads(threads_per_worker > 0 ? threads_per_worker : 1);
  for (;;) {
    std::packaged_task<void()> task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and nothing left
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

}  // namespace mue
