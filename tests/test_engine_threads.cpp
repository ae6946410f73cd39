// One Engine shared by many threads (include/mue/mue.h, "Threads"): 4 threads x 50 mixed
// caption and entailment calls, with varied per-call exit policies, give exactly the bits of the
// same calls made one after another; so do separate Engines per thread and the worker mode.
// The default model keeps it quick. $MUE_TEST_OMP_THREADS sets each call's OpenMP threads
// (default 2; the ThreadSanitizer build runs it with 1, so that only our threads run).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "mue/mue.h"

namespace mue::testing {
namespace {

namespace fs = std::filesystem;
const fs::path kModel = fs::path(MUE_SOURCE_DIR) / "models" / "mue-scenes-small";
const fs::path kImages = fs::path(MUE_SOURCE_DIR) / "tests" / "fixtures" / "default_model";

int omp_threads() {
  const char* env = std::getenv("MUE_TEST_OMP_THREADS");
  return env ? std::atoi(env) : 2;
}

// One call of the mix: a task, an image, a question and an exit policy.
struct Call {
  bool caption = false;
  int image = 0;
  std::string premise, hypothesis;
  int policy = 0;
};

std::vector<fs::path> images() {
  std::vector<fs::path> out;
  for (const char* name : {"cap_00000.png", "cap_00001.png", "cap_00002.png", "cap_00003.png",
                           "ve_00000.png", "ve_00001.png", "ve_00002.png"})
    out.push_back(kImages / name);
  return out;
}

std::vector<CallOptions> policies() {
  std::vector<CallOptions> out(4);
  out[1].exit_policy = ExitPolicy::load((kModel / "exit_policy.entail.json").string());
  out[2].exit_policy = ExitPolicy::load((kModel / "exit_policy.caption.json").string());
  ExitPolicy fixed;
  fixed.fixed_depth_image = 2;
  fixed.fixed_depth_text = 3;
  fixed.fixed_depth_decoder = 2;
  out[3].exit_policy = fixed;
  out[3].generation = GenerationSettings{};
  out[3].generation->beam_size = 2;
  out[3].generation->max_len = 8;
  return out;
}

// A fixed pseudo-random mix, the same in every run.
std::vector<Call> mixed_calls(size_t n) {
  const char* hypotheses[] = {"there is a red shirt", "there are two items",
                              "the bag is left of the shoe", "there is one item",
                              "a blue coat is at the top"};
  std::vector<Call> calls(n);
  uint64_t state = 12345;
  auto next = [&](uint64_t m) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((state >> 33) % m);
  };
  for (Call& c : calls) {
    c.caption = next(3) == 0;
    c.image = next(7);
    c.hypothesis = hypotheses[next(5)];
    if (next(2)) c.premise = "a scene with items";
    c.policy = next(4);
  }
  return calls;
}

// Everything a result says but timing and whether the image came from the cache (which
// depends on what ran before). Doubles are printed in full so that a last-bit change shows.
std::string fingerprint(const CaptionResult& r) {
  nlohmann::json j = r.to_json();
  j.erase("seconds");
  j["exits"].erase("image_reused");
  return j.dump();
}
std::string fingerprint(const EntailmentResult& r) {
  nlohmann::json j = r.to_json();
  j.erase("seconds");
  j["exits"].erase("image_reused");
  return j.dump();
}

class EngineThreadsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kModel / "model.safetensors")) GTEST_SKIP() << kModel << ": no model";
    calls_ = mixed_calls(200);
    policies_ = policies();
  }
  std::unique_ptr<Engine> load(int workers = 0) const {
    EngineOptions opt;
    opt.threads = workers ? 1 : omp_threads();
    opt.workers = workers;
    return Engine::load(kModel.string(), opt);
  }
  // Prepared once and shared read-only by every thread.
  std::vector<PreparedImage> prepare(const Engine& e) const {
    std::vector<PreparedImage> out;
    for (const fs::path& p : images()) out.push_back(e.prepare_image(p.string()));
    return out;
  }
  std::string run(const Engine& e, const std::vector<PreparedImage>& imgs, const Call& c) const {
    const CallOptions& call = policies_[c.policy];
    if (c.caption) return fingerprint(e.caption(imgs[c.image], call));
    return fingerprint(e.entail(imgs[c.image], c.premise, c.hypothesis, call));
  }
  std::vector<std::string> serial() const {
    auto engine = load();
    std::vector<PreparedImage> imgs = prepare(*engine);
    std::vector<std::string> out;
    for (const Call& c : calls_) out.push_back(run(*engine, imgs, c));
    return out;
  }
  std::vector<Call> calls_;
  std::vector<CallOptions> policies_;
};

TEST_F(EngineThreadsTest, FourThreadsOnOneEngineGiveTheSerialBits) {
  const std::vector<std::string> expected = serial();
  auto engine = load();
  const std::vector<PreparedImage> imgs = prepare(*engine);
  std::vector<std::string> got(calls_.size());
  std::vector<std::string> errors(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      try {
        // Thread t takes calls t, t+4, ...: 50 each, interleaved with the others'.
        for (size_t i = t; i < calls_.size(); i += 4) got[i] = run(*engine, imgs, calls_[i]);
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(errors[t], "") << "thread " << t;
  int differ = 0;
  for (size_t i = 0; i < calls_.size(); ++i)
    if (got[i] != expected[i] && ++differ <= 3)
      ADD_FAILURE() << "call " << i << " differs from the serial run:\n  serial:   " << expected[i]
                    << "\n  threaded: " << got[i];
  EXPECT_EQ(differ, 0) << "of " << calls_.size() << " calls";
  EXPECT_GT(engine->image_cache_stats().hits, 0u);  // the threads did share the cache
}

TEST_F(EngineThreadsTest, SeparateEnginesPerThreadGiveTheSerialBits) {
  const std::vector<std::string> expected = serial();
  std::vector<std::string> got(calls_.size());
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      auto engine = load();
      const std::vector<PreparedImage> imgs = prepare(*engine);
      // Backwards on one thread, forwards on the other: each meets the images in another order.
      for (size_t k = 0; k < calls_.size() / 2; ++k) {
        size_t i = t == 0 ? 2 * k : calls_.size() - 1 - 2 * k;
        got[i] = run(*engine, imgs, calls_[i]);
      }
    });
  for (auto& th : threads) th.join();
  for (size_t i = 0; i < calls_.size(); ++i) EXPECT_EQ(got[i], expected[i]) << "call " << i;
}

// Workers run each caption and each image's queries as their own batch of one, so a batch call
// spread over two workers equals the single calls made one after another on one thread.
TEST_F(EngineThreadsTest, WorkersGiveTheSerialBitsOfSingleCalls) {
  EngineOptions one_thread;
  one_thread.threads = 1;
  auto single = Engine::load(kModel.string(), one_thread);
  auto workers = load(2);
  const std::vector<PreparedImage> imgs = prepare(*single);
  std::vector<const PreparedImage*> all;
  for (const PreparedImage& p : imgs) all.push_back(&p);
  const CallOptions& call = policies_[2];
  std::vector<CaptionResult> batched = workers->caption(all, call);
  ASSERT_EQ(batched.size(), imgs.size());
  for (size_t i = 0; i < imgs.size(); ++i)
    EXPECT_EQ(fingerprint(batched[i]), fingerprint(single->caption(imgs[i], call))) << i;

  std::vector<EntailmentQuery> queries;
  for (size_t i = 0; i < imgs.size(); ++i)
    queries.push_back({&imgs[i], "", "there is a red shirt"});
  std::vector<EntailmentResult> answers = workers->entail(queries, policies_[1]);
  for (size_t i = 0; i < imgs.size(); ++i)
    EXPECT_EQ(fingerprint(answers[i]),
              fingerprint(single->entail(imgs[i], "", "there is a red shirt", policies_[1])))
        << i;
  // A failing sample fails the call, after every job has ended.
  std::vector<EntailmentQuery> bad = queries;
  bad[3].hypothesis = "  ";
  EXPECT_THROW(workers->entail(bad), Error);
}

}  // namespace
}  // namespace mue::testing
