// mue-server: captioning and visual entailment over HTTP, with dynamic batching.
//
//   mue-server [--host H] [--port N] [--batch-window-ms X] [--max-batch N] [options]
//   POST /v1/caption, POST /v1/entail   JSON (base64 image) or multipart/form-data
//   GET /health, GET /metrics           liveness, Prometheus metrics
#include <httplib.h>
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <thread>

#include "apps/common/exit_settings.h"
#include "apps/common/options.h"
#include "apps/common/result_json.h"
#include "apps/server/batcher.h"
#include "apps/server/metrics.h"
#include "apps/server/request.h"
#include "mue/mue.h"
#include "mue/runtime.h"

namespace {

namespace apps = mue::apps;
namespace server = mue::server;
using server::RequestError;
using server::Task;

const char* kUsage = R"(usage: mue-server [options]

Serves POST /v1/caption and POST /v1/entail (an image as a multipart/form-data upload or as
base64 in JSON, with the texts and optional exit-policy and generation overrides), GET /health
and GET /metrics (Prometheus text format). Prints "listening on http://HOST:PORT" once it
accepts connections; SIGINT or SIGTERM stops it after the requests it holds are answered.

server:
  --host H                  address to listen on (default 127.0.0.1)
  --port N                  port (default 8080; 0: a free port, printed)
  --batch-window-ms X       how long the oldest waiting request waits for others with the same
                            call to share its batch (default 2; 0: run what is queued at once)
  --max-batch N             samples per batch call at most (default 8)
  --max-queue N             requests waiting for a batch at most; more are refused with 503
                            (default 64)
  --runners N               batches run at once (default 1)
  --http-threads N          connections served at once (default: max-queue + max-batch x
                            runners + 8, so that the queue limit answers before connections wait)
  --max-body-bytes N        request body limit, 413 beyond it (default 33554432)
  --max-image-pixels N      decoded image limit, 400 beyond it (default 16777216)
  --max-text-bytes N        premise and hypothesis limit, 413 beyond it (default 2000)
  --image-cache-mb N        image-stream cache for repeated images (decomposed models;
                            default 256, 0: off)

engine and default exit policy (as the mue CLI; a request's "policy" fields go over it):
%ENGINE%  --policy FILE             exit policy JSON for both tasks; default: the model's
                            exit_policy.caption.json / exit_policy.entail.json per task, else its
                            exit_policy.json, else full depth
%EXIT_FLAGS%)";

std::string usage() {
  std::string text = kUsage;
  text.replace(text.find("%ENGINE%"), 8, apps::kEngineFlagsHelp);
  text.replace(text.find("%EXIT_FLAGS%"), 12, apps::exit_flags_help(2, 28));
  return text;
}

[[noreturn]] void fail(const std::string& message) {
  std::cerr << "mue-server: " << message << "\n";
  std::exit(2);
}

struct Args {
  std::string host = "127.0.0.1", policy_file;
  int port = 8080;
  double batch_window_ms = 2;
  int max_batch = 8, max_queue = 64, runners = 1, http_threads = 0;
  int max_body_bytes = 32 << 20, max_image_pixels = 16 << 20, max_text_bytes = 2000;
  int image_cache_mb = 256;
  apps::EngineFlags engine;
  apps::ExitSettingFlags exits;
};

Args parse(int argc, char** argv) {
  Args a;
  apps::ArgReader args(argc, argv);
  while (!args.done()) {
    const std::string arg = args.next();
    if (a.engine.take(arg, args) || a.exits.take(arg, args)) continue;
    if (arg == "--host") {
      a.host = args.value(arg);
    } else if (arg == "--port") {
      a.port = apps::parse_count(arg, args.value(arg), 0);
      if (a.port > 65535)
        throw mue::Error("--port must be at most 65535, got " + std::to_string(a.port));
    } else if (arg == "--batch-window-ms") {
      a.batch_window_ms = apps::parse_double(arg, args.value(arg));
      if (!(a.batch_window_ms >= 0 && a.batch_window_ms <= 60000))
        throw mue::Error("--batch-window-ms must be from 0 to 60000");
    } else if (arg == "--max-batch") {
      a.max_batch = apps::parse_count(arg, args.value(arg), 1);
    } else if (arg == "--max-queue") {
      a.max_queue = apps::parse_count(arg, args.value(arg), 1);
    } else if (arg == "--runners") {
      a.runners = apps::parse_count(arg, args.value(arg), 1);
    } else if (arg == "--http-threads") {
      a.http_threads = apps::parse_count(arg, args.value(arg), 1);
    } else if (arg == "--max-body-bytes") {
      a.max_body_bytes = apps::parse_count(arg, args.value(arg), 1);
    } else if (arg == "--max-image-pixels") {
      a.max_image_pixels = apps::parse_count(arg, args.value(arg), 1);
    } else if (arg == "--max-text-bytes") {
      a.max_text_bytes = apps::parse_count(arg, args.value(arg), 1);
    } else if (arg == "--image-cache-mb") {
      a.image_cache_mb = apps::parse_count(arg, args.value(arg), 0);
    } else if (arg == "--policy") {
      a.policy_file = args.value(arg);
    } else if (arg == "-h" || arg == "--help") {
      std::cout << usage();
      std::exit(0);
    } else {
      throw mue::Error("unknown option " + arg);
    }
  }
  if (a.http_threads == 0) a.http_threads = a.max_queue + a.max_batch * a.runners + 8;
  return a;
}

// As the CLI: --policy, else the model's policy for the task, else its general one; empty for
// full depth.
std::string policy_file(const Args& a, const std::string& model, Task task) {
  if (!a.policy_file.empty()) return a.policy_file;
  for (const std::string& name : {std::string("exit_policy.") + server::task_name(task) + ".json",
                                  std::string("exit_policy.json")}) {
    std::filesystem::path shipped = std::filesystem::path(model) / name;
    if (std::filesystem::exists(shipped)) return shipped.string();
  }
  return {};
}

struct TaskDefaults {
  std::string policy_file;
  mue::ExitPolicy policy;
};

void send_json(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

class Service {
 public:
  Service(const Args& args, const mue::Engine& engine, const std::map<Task, TaskDefaults>& defaults)
      : engine_(engine),
        defaults_(defaults),
        generation_(args.engine.generation(engine)),
        limits_{static_cast<size_t>(args.max_text_bytes)},
        batcher_(engine,
                 {std::chrono::microseconds(static_cast<int64_t>(args.batch_window_ms * 1000)),
                  static_cast<size_t>(args.max_batch), static_cast<size_t>(args.max_queue),
                  args.runners},
                 metrics_) {}

  void handle(Task task, const httplib::Request& req, httplib::Response& res) {
    const auto start = std::chrono::steady_clock::now();
    int status = 200;
    try {
      nlohmann::json body = answer(task, req, status);
      send_json(res, status, body);
    } catch (const RequestError& e) {
      send_json(res, status = e.status(), {{"error", e.what()}});
    } catch (const mue::Error& e) {
      send_json(res, status = 400, {{"error", e.what()}});
    } catch (const std::exception& e) {
      send_json(res, status = 500, {{"error", std::string("internal error: ") + e.what()}});
    }
    metrics_.record_request(
        req.path, status,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }

  server::Metrics& metrics() { return metrics_; }
  server::Batcher& batcher() { return batcher_; }

 private:
  nlohmann::json answer(Task task, const httplib::Request& req, int& status) {
    server::RequestFields fields;
    if (req.is_multipart_form_data()) {
      std::vector<server::FormField> form;
      for (const auto& [name, part] : req.files)
        form.push_back({name, part.filename, part.content});
      fields = server::parse_form_request(form, task, limits_);
    } else if (req.get_header_value("Content-Type").rfind("application/json", 0) == 0) {
      fields = server::parse_json_request(req.body, task, limits_);
    } else {
      throw RequestError(415,
                         "Content-Type must be application/json or multipart/form-data, got \"" +
                             req.get_header_value("Content-Type") + "\"");
    }
    const TaskDefaults& d = defaults_.at(task);
    server::ResolvedCall call = server::resolve_call(fields, task, engine_, d.policy, generation_);
    server::Job job;
    job.task = task;
    job.key = call.key;
    job.call = call.call;
    try {
      job.image = engine_.prepare_image(reinterpret_cast<const uint8_t*>(fields.image.data()),
                                        fields.image.size(), fields.image_name);
    } catch (const mue::Error& e) {
      throw RequestError(400, std::string("field \"image\": ") + e.what());
    }
    if (task == Task::kEntail) {
      // Checked now, so that a text the model cannot take fails its own request, not a batch.
      engine_.entailment_prompt(fields.premise, fields.hypothesis);
      job.premise = std::move(fields.premise);
      job.hypothesis = std::move(fields.hypothesis);
    }
    server::JobResult result = batcher_.submit(std::move(job)).get();
    status = result.status;
    if (status != 200) return result.body;
    nlohmann::json body = std::move(result.body);
    apps::add_policy_fields(body, fields.policy.is_null() ? d.policy_file : "",
                            *call.call.exit_policy);
    if (task == Task::kCaption) body["generation"] = call.call.generation->to_json();
    body["server"] = {{"batch_size", result.batch_size}, {"queue_seconds", result.queue_seconds}};
    return body;
  }

  const mue::Engine& engine_;
  const std::map<Task, TaskDefaults> defaults_;
  const mue::GenerationSettings generation_;
  const server::RequestLimits limits_;
  server::Metrics metrics_;
  server::Batcher batcher_;
};

// What httplib answers by itself (unknown paths, bodies over the limit, malformed HTTP) gets a
// JSON reason too.
std::string http_error_reason(const httplib::Request& req, int status, int max_body_bytes) {
  switch (status) {
    case 404:
      return "no endpoint " + req.method + " " + req.path +
             " (POST /v1/caption, POST /v1/entail, GET /health, GET /metrics)";
    case 405:
      return "method " + req.method + " is not allowed on " + req.path;
    case 413:
      return "the request body is larger than the limit of " + std::to_string(max_body_bytes) +
             " bytes (--max-body-bytes)";
    case 414:
      return "the request URI is too long";
    default:
      return "the request is not valid HTTP (status " + std::to_string(status) + ")";
  }
}

}  // namespace

int main(int argc, char** argv) {
  mue::adopt_openmp_wait_policy(argv);  // before any OpenMP work: see mue/runtime.h
  Args a;
  try {
    a = parse(argc, argv);
  } catch (const mue::Error& e) {
    apps::usage_error("mue-server", e.what());
  }
  // SIGINT and SIGTERM go to one thread that stops the server; every other thread (httplib's,
  // the batcher's, the engine's) inherits the blocked mask. A closed client socket is not fatal.
  // A shell starts background jobs with SIGINT ignored, and an ignored signal never reaches
  // sigwait; the server's own handling replaces the inherited disposition.
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<mue::Engine> engine;
  std::map<Task, TaskDefaults> defaults;
  try {
    const std::string model = apps::find_model(a.engine.model);
    mue::EngineOptions options = a.engine.engine_options();
    options.max_image_pixels = a.max_image_pixels;
    options.image_cache_bytes = static_cast<size_t>(a.image_cache_mb) << 20;
    engine = mue::Engine::load(model, options);
    for (Task task : {Task::kCaption, Task::kEntail}) {
      TaskDefaults& d = defaults[task];
      d.policy_file = policy_file(a, model, task);
      const mue::ExitPolicy start =
          d.policy_file.empty() ? mue::ExitPolicy() : mue::ExitPolicy::load(d.policy_file);
      d.policy = a.exits.apply(start);
      engine->check_exit_policy(d.policy);
    }
    a.engine.generation(*engine);  // --beam and --max-len are checked before serving
  } catch (const mue::Error& e) {
    fail(e.what());
  }

  Service service(a, *engine, defaults);
  httplib::Server http;
  const int threads = a.http_threads;
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_payload_max_length(static_cast<size_t>(a.max_body_bytes));
  http.set_keep_alive_max_count(1000);
  http.set_tcp_nodelay(true);
  http.Post("/v1/caption", [&](const httplib::Request& req, httplib::Response& res) {
    service.handle(Task::kCaption, req, res);
  });
  http.Post("/v1/entail", [&](const httplib::Request& req, httplib::Response& res) {
    service.handle(Task::kEntail, req, res);
  });
  http.Get("/health", [&](const httplib::Request&, httplib::Response& res) {
    const server::QueueState q = service.batcher().state();
    send_json(res, 200,
              {{"status", "ok"},
               {"model", engine->config().name},
               {"queue_length", q.length},
               {"running_samples", q.running}});
  });
  http.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(service.metrics().render(service.batcher().state()),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  const int max_body = a.max_body_bytes;
  http.set_error_handler([&, max_body](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;  // a handler's own answer
    send_json(res, res.status, {{"error", http_error_reason(req, res.status, max_body)}});
    // Unknown paths count under one label, so that clients cannot grow the metrics.
    const bool known = req.path == "/v1/caption" || req.path == "/v1/entail" ||
                       req.path == "/health" || req.path == "/metrics";
    service.metrics().record_request(known ? req.path : "other", res.status, -1);
  });
  http.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        send_json(res, 500, {{"error", "internal error: " + what}});
      });

  const int port = a.port == 0 ? http.bind_to_any_port(a.host)
                               : (http.bind_to_port(a.host, a.port) ? a.port : -1);
  if (port < 0) fail("cannot listen on " + a.host + ":" + std::to_string(a.port));
  std::thread([&http, stop_signals] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    std::cerr << "mue-server: " << (sig == SIGINT ? "SIGINT" : "SIGTERM")
              << ": answering the requests held, then stopping\n";
    http.stop();
  }).detach();
  std::cerr << "mue-server: model " << engine->config().name << ", " << engine->threads_per_call()
            << " thread(s) per call, " << a.engine.workers << " worker(s), batch window "
            << a.batch_window_ms << " ms, max batch " << a.max_batch << ", max queue "
            << a.max_queue << "\n";
  std::cout << "mue-server: listening on http://" << a.host << ":" << port << std::endl;
  const bool ok = http.listen_after_bind();
  service.batcher().stop();
  std::cerr << "mue-server: stopped\n";
  return ok ? 0 : 1;
}
