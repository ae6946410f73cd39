#include "apps/server/metrics.h"

#include <sstream>

namespace mue::server {

namespace {

const std::vector<double> kLatencyBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                            0.5,   1,    2.5,   5,    10,  30};

// Prometheus label values escape backslash, quote and newline.
std::string label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

std::string number(double v) {
  std::ostringstream s;
  s.precision(10);
  s << v;
  return s.str();
}

void header(std::ostringstream& out, const std::string& name, const std::string& type,
            const std::string& help) {
  out << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
}

void histogram(std::ostringstream& out, const std::string& name, const std::string& labels,
               const Histogram& h) {
  const std::string sep = labels.empty() ? "" : ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < h.bounds.size(); ++i) {
    cumulative += h.counts[i];
    out << name << "_bucket{" << labels << sep << "le=\"" << number(h.bounds[i]) << "\"} "
        << cumulative << "\n";
  }
  out << name << "_bucket{" << labels << sep << "le=\"+Inf\"} " << h.count << "\n";
  out << name << "_sum{" << labels << "} " << number(h.sum) << "\n";
  out << name << "_count{" << labels << "} " << h.count << "\n";
}

}  // namespace

void Histogram::observe(double v) {
  for (size_t i = 0; i < bounds.size(); ++i)
    if (v <= bounds[i]) {
      ++counts[i];
      break;
    }
  ++count;
  sum += v;
}

void Metrics::record_request(const std::string& endpoint, int status, double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{endpoint, status}];
  if (seconds < 0) return;  // answered by httplib itself, timed by no one
  auto it = latency_.try_emplace(endpoint, Histogram(kLatencyBounds)).first;
  it->second.observe(seconds);
}

void Metrics::record_batch(const std::string& task, size_t size) {
  std::lock_guard<std::mutex> lock(mutex_);
  tasks_[task].batch_size.observe(static_cast<double>(size));
}

void Metrics::record_sample(const std::string& task, const ExitStatistics& exits) {
  std::lock_guard<std::mutex> lock(mutex_);
  TaskStats& t = tasks_[task];
  ++t.samples;
  t.image_layers += exits.image_layers;
  t.text_layers += exits.text_layers;
  t.decoder_layers += exits.mean_decoder_layers();
  t.expected_time_reduction += exits.expected_time_reduction();
}

void Metrics::record_rejected() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++rejected_;
}

std::string Metrics::render(const QueueState& queue) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::ostringstream out;
  header(out, "mue_server_requests_total", "counter", "Requests answered, by endpoint and status.");
  for (const auto& [key, n] : requests_)
    out << "mue_server_requests_total{endpoint=\"" << label(key.first) << "\",status=\""
        << key.second << "\"} " << n << "\n";
  header(out, "mue_server_request_errors_total", "counter",
         "Requests answered with a 4xx or 5xx status, by endpoint and status.");
  for (const auto& [key, n] : requests_)
    if (key.second >= 400)
      out << "mue_server_request_errors_total{endpoint=\"" << label(key.first) << "\",status=\""
          << key.second << "\"} " << n << "\n";
  header(out, "mue_server_request_duration_seconds", "histogram",
         "Wall-clock time from a request's arrival to its answer, by endpoint.");
  for (const auto& [endpoint, h] : latency_)
    histogram(out, "mue_server_request_duration_seconds", "endpoint=\"" + label(endpoint) + "\"",
              h);
  header(out, "mue_server_batch_size", "histogram", "Samples per engine batch call, by task.");
  for (const auto& [task, t] : tasks_)
    histogram(out, "mue_server_batch_size", "task=\"" + label(task) + "\"", t.batch_size);
  header(out, "mue_server_samples_total", "counter", "Samples the engine ran, by task.");
  for (const auto& [task, t] : tasks_)
    out << "mue_server_samples_total{task=\"" << label(task) << "\"} " << t.samples << "\n";
  // Each family's samples stay together, as the format requires.
  for (const bool mean : {false, true}) {
    const std::string name = mean ? "mue_server_mean_layers" : "mue_server_layers_total";
    if (mean)
      header(out, name, "gauge", "Mean layers used per sample, by task and stream.");
    else
      header(out, name, "counter",
             "Layers used, summed over samples, by task and stream (decoder: the mean over a "
             "sample's tokens).");
    for (const auto& [task, t] : tasks_) {
      const std::pair<const char*, double> streams[] = {
          {"image", t.image_layers}, {"text", t.text_layers}, {"decoder", t.decoder_layers}};
      for (const auto& [stream, sum] : streams) {
        const double v = !mean ? sum : t.samples ? sum / static_cast<double>(t.samples) : 0;
        out << name << "{task=\"" << label(task) << "\",stream=\"" << stream << "\"} " << number(v)
            << "\n";
      }
    }
  }
  header(out, "mue_server_expected_time_reduction_total", "counter",
         "Time saved by exits: the expected time reduction (1 - layers used / all layers, "
         "spec 1.6) summed over samples, by task.");
  for (const auto& [task, t] : tasks_)
    out << "mue_server_expected_time_reduction_total{task=\"" << label(task) << "\"} "
        << number(t.expected_time_reduction) << "\n";
  header(out, "mue_server_mean_expected_time_reduction", "gauge",
         "The expected time reduction's mean over samples, by task.");
  for (const auto& [task, t] : tasks_)
    out << "mue_server_mean_expected_time_reduction{task=\"" << label(task) << "\"} "
        << number(t.samples ? t.expected_time_reduction / static_cast<double>(t.samples) : 0)
        << "\n";
  header(out, "mue_server_queue_length", "gauge", "Requests waiting for a batch.");
  out << "mue_server_queue_length " << queue.length << "\n";
  header(out, "mue_server_queue_capacity", "gauge",
         "Requests that may wait before new ones are refused with 503.");
  out << "mue_server_queue_capacity " << queue.capacity << "\n";
  header(out, "mue_server_running_samples", "gauge", "Samples in batches the engine is running.");
  out << "mue_server_running_samples " << queue.running << "\n";
  header(out, "mue_server_rejected_total", "counter",
         "Requests refused because the queue was full.");
  out << "mue_server_rejected_total " << rejected_ << "\n";
  return out.str();
}

}  // namespace mue::server
