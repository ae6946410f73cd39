// Dynamic batching for mue-server: requests wait in one queue; a runner takes the oldest, waits
// up to the batch window from its arrival for more requests with the same call (task, exit
// policy, generation), and runs up to max_batch of them as one batch call of the Engine. Inside
// the call each sample exits on its own and leaves the batch (compaction), so a batch never
// waits for its slowest sample's layers. A full queue refuses at once (503), never blocks.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "apps/server/metrics.h"
#include "apps/server/request.h"
#include "mue/mue.h"

namespace mue::server {

struct BatcherOptions {
  std::chrono::microseconds window{std::chrono::milliseconds(2)};  // 0: run what is there
  size_t max_batch = 8;
  size_t max_queue = 64;  // requests waiting (not yet in a batch)
  int runners = 1;        // batches in flight at once
};

// What a request gets back: the result's JSON (the fields of the CLI's --json) or an error.
struct JobResult {
  int status = 200;
  nlohmann::json body;
  size_t batch_size = 0;
  double queue_seconds = 0;  // from submit to the start of its batch
};

struct Job {
  Task task = Task::kCaption;
  std::string key;  // ResolvedCall::key: jobs share a batch only when their keys are equal
  CallOptions call;
  PreparedImage image;
  std::string premise, hypothesis;
};

class Batcher {
 public:
  Batcher(const Engine& engine, const BatcherOptions& options, Metrics& metrics);
  ~Batcher();  // stop()
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues `job`; the future is fulfilled when its batch has run. Throws RequestError 503 when
  // the queue is full or the batcher is stopping.
  std::future<JobResult> submit(Job job);
  // Runs what is queued, then ends the runners. Later submits are refused.
  void stop();

  QueueState state() const;

 private:
  struct Pending {
    Job job;
    std::chrono::steady_clock::time_point arrived;
    std::promise<JobResult> done;
  };
  void run();
  // Up to max_batch queued jobs with the oldest one's key, oldest first; waits for the window.
  std::vector<std::unique_ptr<Pending>> take_batch(std::unique_lock<std::mutex>& lock);
  void run_batch(std::vector<std::unique_ptr<Pending>>& batch);
  size_t count_key(const std::string& key) const;

  const Engine& engine_;
  const BatcherOptions options_;
  Metrics& metrics_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::unique_ptr<Pending>> queue_;
  size_t running_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> runners_;
};

}  // namespace mue::server
