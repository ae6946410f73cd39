// ThreadCountScope and WorkerPool (src/core/threads.h).
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <set>
#include <stdexcept>

#include "core/threads.h"
#include "mue/runtime.h"

namespace mue {
namespace {

TEST(ThreadCountScope, SetsTheCallingThreadsCountAndRestoresIt) {
  omp_set_num_threads(3);
  {
    ThreadCountScope scope(1);
    EXPECT_EQ(omp_get_max_threads(), 1);
  }
  EXPECT_EQ(omp_get_max_threads(), 3);
  {
    ThreadCountScope none(0);  // 0 leaves it as it is
    EXPECT_EQ(omp_get_max_threads(), 3);
  }
  set_num_threads(0);
  EXPECT_EQ(num_threads(), hardware_threads());
}

TEST(WorkerPool, RunsEveryJobOnItsWorkersWithTheirThreadCount) {
  WorkerPool pool(2, 1);
  EXPECT_EQ(pool.size(), 2);
  std::atomic<int> ran{0}, wrong_count{0};
  std::mutex mutex;
  std::set<std::thread::id> ids;
  std::vector<std::future<void>> done;
  for (int i = 0; i < 40; ++i)
    done.push_back(pool.submit([&] {
      if (omp_get_max_threads() != 1) ++wrong_count;
      std::lock_guard<std::mutex> lock(mutex);
      ids.insert(std::this_thread::get_id());
      ++ran;
    }));
  for (auto& d : done) d.get();
  EXPECT_EQ(ran, 40);
  EXPECT_EQ(wrong_count, 0);
  EXPECT_LE(ids.size(), 2u);
  EXPECT_EQ(ids.count(std::this_thread::get_id()), 0u);
}

TEST(WorkerPool, AFailingJobReportsThroughItsFuture) {
  WorkerPool pool(1, 1);
  auto bad = pool.submit([] { throw std::runtime_error("job failed"); });
  auto good = pool.submit([] {});
  EXPECT_THROW(bad.get(), std::runtime_error);
  EXPECT_NO_THROW(good.get());
}

}  // namespace
}  // namespace mue
