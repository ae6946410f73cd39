#include "apps/server/batcher.h"

#include <algorithm>

namespace mue::server {

using Clock = std::chrono::steady_clock;

Batcher::Batcher(const Engine& engine, const BatcherOptions& options, Metrics& metrics)
    : engine_(engine), options_(options), metrics_(metrics) {
  for (int i = 0; i < std::max(1, options_.runners); ++i) runners_.emplace_back([this] { run(); });
}

Batcher::~Batcher() { stop(); }

std::future<JobResult> Batcher::submit(Job job) {
  auto pending = std::make_unique<Pending>();
  pending->job = std::move(job);
  pending->arrived = Clock::now();
  std::future<JobResult> result = pending->done.get_future();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) throw RequestError(503, "the server is shutting down");
    if (queue_.size() >= options_.max_queue) {
      metrics_.record_rejected();
      throw RequestError(503, "the queue is full (" + std::to_string(queue_.size()) +
                                  " requests waiting, --max-queue " +
                                  std::to_string(options_.max_queue) + "); retry later");
    }
    queue_.push_back(std::move(pending));
  }
  changed_.notify_all();
  return result;
}

void Batcher::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  for (std::thread& t : runners_)
    if (t.joinable()) t.join();
  runners_.clear();
}

QueueState Batcher::state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {queue_.size(), options_.max_queue, running_};
}

size_t Batcher::count_key(const std::string& key) const {
  return static_cast<size_t>(std::count_if(queue_.begin(), queue_.end(),
                                           [&](const auto& p) { return p->job.key == key; }));
}

std::vector<std::unique_ptr<Batcher::Pending>> Batcher::take_batch(
    std::unique_lock<std::mutex>& lock) {
  // The window counts from the oldest request's arrival, so no request waits longer than it
  // for company; while stopping, what is queued runs at once.
  while (!queue_.empty() && !stopping_) {
    const std::string key = queue_.front()->job.key;
    const Clock::time_point deadline = queue_.front()->arrived + options_.window;
    if (count_key(key) >= options_.max_batch || Clock::now() >= deadline) break;
    changed_.wait_until(lock, deadline);
  }
  std::vector<std::unique_ptr<Pending>> batch;
  if (queue_.empty()) return batch;  // another runner took them
  const std::string key = queue_.front()->job.key;
  for (auto it = queue_.begin(); it != queue_.end() && batch.size() < options_.max_batch;) {
    if ((*it)->job.key == key) {
      batch.push_back(std::move(*it));
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  return batch;
}

void Batcher::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left to run
    std::vector<std::unique_ptr<Pending>> batch = take_batch(lock);
    if (batch.empty()) continue;
    running_ += batch.size();
    lock.unlock();
    run_batch(batch);
    lock.lock();
    running_ -= batch.size();
  }
}

void Batcher::run_batch(std::vector<std::unique_ptr<Pending>>& batch) {
  const Clock::time_point start = Clock::now();
  const Job& first = batch.front()->job;
  const std::string task = task_name(first.task);
  std::vector<JobResult> results(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    results[i].batch_size = batch.size();
    results[i].queue_seconds = std::chrono::duration<double>(start - batch[i]->arrived).count();
  }
  // One batch call; the samples' exits go to the metrics.
  auto run_all = [&](size_t begin, size_t end) {
    if (first.task == Task::kCaption) {
      std::vector<const PreparedImage*> images;
      for (size_t i = begin; i < end; ++i) images.push_back(&batch[i]->job.image);
      std::vector<CaptionResult> r = engine_.caption(images, first.call);
      for (size_t i = begin; i < end; ++i) {
        metrics_.record_sample(task, r[i - begin].exits);
        results[i].body = r[i - begin].to_json();
      }
    } else {
      std::vector<EntailmentQuery> queries;
      for (size_t i = begin; i < end; ++i)
        queries.push_back({&batch[i]->job.image, batch[i]->job.premise, batch[i]->job.hypothesis});
      std::vector<EntailmentResult> r = engine_.entail(queries, first.call);
      for (size_t i = begin; i < end; ++i) {
        metrics_.record_sample(task, r[i - begin].exits);
        results[i].body = r[i - begin].to_json();
      }
    }
  };
  try {
    run_all(0, batch.size());
    metrics_.record_batch(task, batch.size());
  } catch (const std::exception& whole) {
    // Requests are checked before they queue, so this is rare; run each alone so that one
    // sample's failure answers only its own request.
    for (size_t i = 0; i < batch.size(); ++i) {
      try {
        run_all(i, i + 1);
        metrics_.record_batch(task, 1);
        results[i].batch_size = 1;
      } catch (const Error& e) {
        results[i].status = 400;
        results[i].body = {{"error", e.what()}};
      } catch (const std::exception& e) {
        results[i].status = 500;
        results[i].body = {{"error", std::string("internal error: ") + e.what()}};
      }
    }
  }
  for (size_t i = 0; i < batch.size(); ++i) batch[i]->done.set_value(std::move(results[i]));
}

}  // namespace mue::server
