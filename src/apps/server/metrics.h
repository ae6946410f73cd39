// mue-server's counters, rendered in the Prometheus text exposition format (version 0.0.4) for
// GET /metrics: requests and errors by endpoint and status, request latency and batch size
// histograms, and per task the samples run, the layers each stream used (summed, and their
// mean) and the time saved by exits (the expected time reduction summed, and its mean).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "mue/mue.h"

namespace mue::server {

// A cumulative histogram with fixed upper bounds (+Inf implied).
struct Histogram {
  explicit Histogram(std::vector<double> bounds = {})
      : bounds(std::move(bounds)), counts(this->bounds.size(), 0) {}
  std::vector<double> bounds;
  std::vector<uint64_t> counts;  // observations <= bounds[i], not cumulative
  uint64_t count = 0;
  double sum = 0;
  void observe(double v);
};

// What the server's queue looks like when the metrics are read.
struct QueueState {
  size_t length = 0, capacity = 0, running = 0;
};

class Metrics {
 public:
  // One answered request: its endpoint ("/v1/caption"), status and wall-clock seconds (< 0:
  // not timed, counted only).
  void record_request(const std::string& endpoint, int status, double seconds);
  // A batch the engine ran, and each of its samples' exits.
  void record_batch(const std::string& task, size_t size);
  void record_sample(const std::string& task, const ExitStatistics& exits);
  // A request refused because the queue was full.
  void record_rejected();

  std::string render(const QueueState& queue) const;

 private:
  struct TaskStats {
    Histogram batch_size{{1, 2, 4, 8, 16, 32, 64, 128}};
    uint64_t samples = 0;
    double image_layers = 0, text_layers = 0, decoder_layers = 0;
    double expected_time_reduction = 0;
  };
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (endpoint, status)
  std::map<std::string, Histogram> latency_;                  // by endpoint
  std::map<std::string, TaskStats> tasks_;
  uint64_t rejected_ = 0;
};

}  // namespace mue::server
