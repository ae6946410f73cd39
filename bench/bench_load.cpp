// Latency with and without a competing busy process, and throughput of the worker mode
// (EngineOptions::workers), on one machine, alternating, so that drift hits every figure alike.
//
//   bench_load [--model DIR] [--images DIR] [--task entail|caption] [--calls N] [--rounds N]
//              [--threads N] [--json FILE]
//
// Latency: single calls (batch 1, image cache cleared, so every call pays for its image pass) on
// an engine with --threads OpenMP threads (default 0: the engine's choice for the model), in rounds
// of `calls` calls quiet and `calls` calls while a child process spins on one core. Throughput:
// every image of --images as one batch call, on engines with workers 0 (one call, --threads
// threads), 1 and 2 (one thread each). Prints the machine, the OpenMP environment, medians and
// p95s, and ratios. Never asserts.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "apps/common/machine.h"
#include "mue/mue.h"
#include "mue/runtime.h"

namespace {

namespace fs = std::filesystem;

struct Args {
  std::string model, images, task = "entail", json;
  int calls = 30, rounds = 3, threads = 0;
};

[[noreturn]] void usage_error(const std::string& why) {
  std::cerr << "bench_load: " << why
            << "\nusage: bench_load [--model DIR] [--images DIR] [--task entail|caption] "
               "[--calls N] [--rounds N] [--threads N] [--json FILE]\n";
  std::exit(2);
}

int positive(const std::string& flag, const std::string& text, int min) {
  try {
    size_t used = 0;
    int v = std::stoi(text, &used);
    if (used == text.size() && v >= min) return v;
  } catch (const std::exception&) {
  }
  usage_error(flag + " needs a whole number >= " + std::to_string(min) + ", got \"" + text + "\"");
}

Args parse(int argc, char** argv) {
  Args a;
  a.model = std::getenv("MUE_MODEL") ? std::getenv("MUE_MODEL")
                                     : std::string(MUE_SOURCE_DIR) + "/models/mue-scenes-small";
  a.images = std::string(MUE_SOURCE_DIR) + "/tests/fixtures/default_model";
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) usage_error(flag + " needs a value");
    std::string value = argv[++i];
    if (flag == "--model")
      a.model = value;
    else if (flag == "--images")
      a.images = value;
    else if (flag == "--task")
      a.task = value;
    else if (flag == "--json")
      a.json = value;
    else if (flag == "--calls")
      a.calls = positive(flag, value, 1);
    else if (flag == "--rounds")
      a.rounds = positive(flag, value, 1);
    else if (flag == "--threads")
      a.threads = positive(flag, value, 0);
    else
      usage_error("unknown flag " + flag);
  }
  if (a.task != "entail" && a.task != "caption")
    usage_error("--task must be entail or caption, got \"" + a.task + "\"");
  return a;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  size_t k = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(k, v.size() - 1)];
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A child process that spins on one core until killed: the "other busy process".
class BusyProcess {
 public:
  BusyProcess() {
    pid_ = ::fork();
    if (pid_ == 0) {
      volatile unsigned long spin = 0;
      for (;;) spin = spin + 1;
    }
    if (pid_ < 0) throw std::runtime_error("bench_load: fork failed");
    ::usleep(50000);  // let the scheduler see it
  }
  ~BusyProcess() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }

 private:
  pid_t pid_;
};

}  // namespace

int main(int argc, char** argv) {
  mue::adopt_openmp_wait_policy(argv);  // as the shipped binaries; set OMP_WAIT_POLICY to compare
  Args a = parse(argc, argv);
  try {
    mue::MachineInfo machine = mue::machine_info();
    std::printf("machine: %s; %d cores; CPU ISA: %s; oneDNN %s uses %s\n",
                machine.cpu_model.c_str(), machine.cores, machine.cpu_isa.c_str(),
                machine.onednn_version.c_str(), machine.onednn_isa.c_str());
    std::printf("OpenMP environment: %s\n", machine.openmp_environment.empty()
                                                ? "(none set: libgomp's defaults)"
                                                : machine.openmp_environment.c_str());

    mue::EngineOptions latency_options;
    latency_options.threads = a.threads;  // 0: the engine's default for this model
    auto engine = mue::Engine::load(a.model, latency_options);
    const int threads = engine->threads_per_call();
    std::printf("machine: %s\n",
                mue::apps::machine_line(mue::apps::machine_block(threads)).c_str());
    std::vector<mue::PreparedImage> images;
    for (const auto& entry : fs::directory_iterator(a.images)) {
      std::string ext = entry.path().extension().string();
      if (ext == ".png" || ext == ".jpg" || ext == ".jpeg")
        images.push_back(engine->prepare_image(entry.path().string()));
    }
    if (images.empty()) usage_error("no .png or .jpg images in " + a.images);
    std::sort(images.begin(), images.end(),
              [](const auto& x, const auto& y) { return x.name < y.name; });
    std::printf("model %s, %s, %zu images from %s\n", a.model.c_str(), a.task.c_str(),
                images.size(), a.images.c_str());

    auto one_call = [&](const mue::Engine& e, size_t i) {
      e.clear_image_cache();
      const mue::PreparedImage& img = images[i % images.size()];
      auto t0 = std::chrono::steady_clock::now();
      if (a.task == "caption")
        e.caption(img);
      else
        e.entail(img, "", "there is a red shirt");
      return seconds_since(t0);
    };
    for (size_t i = 0; i < 5; ++i) one_call(*engine, i);  // warm-up: primitives, grid caches

    // Latency, quiet and loaded, alternating by rounds.
    std::vector<double> quiet, loaded;
    for (int r = 0; r < a.rounds; ++r) {
      for (int c = 0; c < a.calls; ++c) quiet.push_back(one_call(*engine, c));
      BusyProcess busy;
      for (int c = 0; c < a.calls; ++c) loaded.push_back(one_call(*engine, c));
    }

    // Throughput: the whole image list as one batch call, per worker count, alternating.
    std::map<int, std::unique_ptr<mue::Engine>> engines;
    for (int workers : {1, 2}) {
      mue::EngineOptions o;
      o.threads = 1;
      o.workers = workers;
      engines[workers] = mue::Engine::load(a.model, o);
    }
    std::vector<const mue::PreparedImage*> batch;
    for (const auto& img : images) batch.push_back(&img);
    std::vector<mue::EntailmentQuery> queries;
    for (const auto& img : images) queries.push_back({&img, "", "there is a red shirt"});
    auto batch_call = [&](const mue::Engine& e) {
      e.clear_image_cache();
      auto t0 = std::chrono::steady_clock::now();
      if (a.task == "caption")
        e.caption(batch);
      else
        e.entail(queries);
      return static_cast<double>(images.size()) / seconds_since(t0);
    };
    std::map<int, std::vector<double>> per_second;
    for (auto& [w, e] : engines) batch_call(*e);  // warm-up
    for (int r = 0; r < a.rounds; ++r) {
      per_second[0].push_back(batch_call(*engine));
      for (auto& [w, e] : engines) per_second[w].push_back(batch_call(*e));
    }

    const double q50 = percentile(quiet, 0.5), l50 = percentile(loaded, 0.5);
    std::printf("\nlatency, %s, %d thread%s per call, %zu calls each:\n", a.task.c_str(), threads,
                threads == 1 ? "" : "s", quiet.size());
    std::printf("  quiet:                  median %8.2f ms   p95 %8.2f ms   max %8.2f ms\n",
                1e3 * q50, 1e3 * percentile(quiet, 0.95), 1e3 * percentile(quiet, 1.0));
    std::printf("  one busy process:       median %8.2f ms   p95 %8.2f ms   max %8.2f ms\n",
                1e3 * l50, 1e3 * percentile(loaded, 0.95), 1e3 * percentile(loaded, 1.0));
    std::printf("  loaded / quiet median:  %.2fx (a fair share of the CPU would be about 2x)\n",
                l50 / q50);
    std::printf("\nthroughput, %s, %zu images per batch call, median of %d:\n", a.task.c_str(),
                images.size(), a.rounds);
    const double base = percentile(per_second[0], 0.5);
    for (const auto& [w, v] : per_second)
      std::printf("  workers %d (%d thread%s each):  %8.2f samples/s  (%.2fx workers 0)\n", w,
                  w == 0 ? threads : 1, (w == 0 ? threads : 1) == 1 ? "" : "s", percentile(v, 0.5),
                  percentile(v, 0.5) / base);

    if (!a.json.empty()) {
      nlohmann::json j = {{"machine", mue::apps::machine_block(threads)},
                          {"model", a.model},
                          {"task", a.task},
                          {"threads", threads},
                          {"latency_seconds",
                           {{"quiet", {{"median", q50}, {"p95", percentile(quiet, 0.95)}}},
                            {"busy_process", {{"median", l50}, {"p95", percentile(loaded, 0.95)}}},
                            {"ratio", l50 / q50}}}};
      for (const auto& [w, v] : per_second)
        j["throughput_per_second"]["workers_" + std::to_string(w)] = percentile(v, 0.5);
      std::ofstream(a.json) << j.dump(2) << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_load: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
