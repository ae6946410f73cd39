// The decoder's per-call phase split (CallOptions::decoder_split, StageSeconds::decoder_split;
// core/phase_timer.h): present only when asked, phases non-negative and within the decoder's
// time, the same result bits with and without it, per call across threads and workers. No
// timing is asserted beyond those bounds. The default model keeps it quick.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/phase_timer.h"
#include "mue/mue.h"

namespace mue::testing {
namespace {

namespace fs = std::filesystem;
const fs::path kModel = fs::path(MUE_SOURCE_DIR) / "models" / "mue-scenes-small";
const fs::path kImages = fs::path(MUE_SOURCE_DIR) / "tests" / "fixtures" / "default_model";
constexpr const char* kHypothesis = "there is a red shirt";

// Everything but the timing, doubles in full: equal strings are equal bits.
template <typename Result>
std::string fingerprint(const Result& r) {
  nlohmann::json j = r.to_json();
  j.erase("seconds");
  j["exits"].erase("image_reused");
  return j.dump();
}

CallOptions with_split() {
  CallOptions c;
  c.decoder_split = true;
  return c;
}

// Bounds any split must meet; `search` only where the task searches.
void expect_sane(const StageSeconds& s, bool searches, const std::string& what) {
  ASSERT_TRUE(s.decoder_split.has_value()) << what;
  const DecoderSplit& d = *s.decoder_split;
  for (double phase :
       {d.gemm, d.cross_key_value, d.attention, d.output_projection, d.search, d.rest})
    EXPECT_GE(phase, 0.0) << what;
  EXPECT_GT(d.gemm, 0.0) << what;
  EXPECT_GT(d.cross_key_value, 0.0) << what;
  EXPECT_GT(d.attention, 0.0) << what;
  EXPECT_GT(d.output_projection, 0.0) << what;
  if (searches)
    EXPECT_GT(d.search, 0.0) << what;
  else
    EXPECT_EQ(d.search, 0.0) << what;
  const double phases =
      d.gemm + d.cross_key_value + d.attention + d.output_projection + d.search + d.rest;
  EXPECT_LE(phases, s.decoder * (1 + 1e-9) + 1e-9) << what;  // rest fills it up, never over
  EXPECT_GE(phases, s.decoder * (1 - 1e-9) - 1e-9) << what;
  const nlohmann::json j = s.to_json();
  ASSERT_TRUE(j.contains("decoder_split")) << what;
  EXPECT_EQ(j["decoder_split"]["steps"].get<int64_t>(), d.steps) << what;
}

class StepSplitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kModel / "model.safetensors")) GTEST_SKIP() << kModel << ": no model";
  }
  static std::unique_ptr<Engine> load(ComputeType type = ComputeType::kF32, int workers = 0) {
    EngineOptions opt;
    opt.threads = 1;
    opt.workers = workers;
    opt.compute_type = type;
    return Engine::load(kModel.string(), opt);
  }
  static PreparedImage image(const Engine& e, const char* name) {
    return e.prepare_image((kImages / name).string());
  }
};

TEST_F(StepSplitTest, PresentOnlyWhenAskedAndWithinTheDecoderTime) {
  auto engine = load();
  const PreparedImage img = image(*engine, "cap_00000.png");
  const CaptionResult plain = engine->caption(img);
  EXPECT_FALSE(plain.seconds.decoder_split.has_value());
  EXPECT_FALSE(plain.seconds.to_json().contains("decoder_split"));  // JSON unchanged when off
  const EntailmentResult plain_ve = engine->entail(img, "", kHypothesis);
  EXPECT_FALSE(plain_ve.seconds.decoder_split.has_value());
  EXPECT_FALSE(plain_ve.to_json()["seconds"].contains("decoder_split"));

  const CaptionResult c = engine->caption(img, with_split());
  expect_sane(c.seconds, true, "caption");
  // One step per generated token (EOS included) of the one sample.
  EXPECT_EQ(c.seconds.decoder_split->steps, static_cast<int64_t>(c.exits.decoder_layers.size()));
  // The projection reads its fp32 weights [vocab, d] once a step (oneDNN may pad its layout).
  const double step_bytes = c.seconds.decoder_split->output_projection_bytes /
                            static_cast<double>(c.seconds.decoder_split->steps);
  const double weights = 4.0 * engine->config().vocab_size * engine->config().d_model;
  EXPECT_GE(step_bytes, weights);
  EXPECT_LE(step_bytes, 1.25 * weights);

  const EntailmentResult e = engine->entail(img, "", kHypothesis, with_split());
  expect_sane(e.seconds, false, "entail");
  EXPECT_EQ(e.seconds.decoder_split->steps, 1);  // one pass
}

TEST_F(StepSplitTest, ResultsAreTheSameBitsWithAndWithoutIt) {
  for (ComputeType type : {ComputeType::kF32, ComputeType::kInt8}) {
    auto engine = load(type);
    const std::string what = compute_type_name(type);
    const PreparedImage a = image(*engine, "cap_00001.png"), b = image(*engine, "ve_00000.png");
    const std::vector<const PreparedImage*> both{&a, &b};
    std::vector<CaptionResult> off = engine->caption(both);
    std::vector<CaptionResult> on = engine->caption(both, with_split());
    ASSERT_EQ(on.size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_EQ(fingerprint(on[i]), fingerprint(off[i])) << what << " caption " << i;
      expect_sane(on[i].seconds, true, what + " batch caption");
    }
    // A batch shares its time equally and its steps are the batch's: the longest caption's.
    EXPECT_EQ(on[0].seconds.decoder_split->gemm, on[1].seconds.decoder_split->gemm);
    EXPECT_EQ(on[0].seconds.decoder_split->steps,
              static_cast<int64_t>(
                  std::max(on[0].exits.decoder_layers.size(), on[1].exits.decoder_layers.size())));
    const std::vector<EntailmentQuery> queries{{&a, "", kHypothesis}, {&b, "a scene", kHypothesis}};
    engine->clear_image_cache();
    std::vector<EntailmentResult> ve_off = engine->entail(queries);
    engine->clear_image_cache();
    std::vector<EntailmentResult> ve_on = engine->entail(queries, with_split());
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_EQ(fingerprint(ve_on[i]), fingerprint(ve_off[i])) << what << " entail " << i;
      expect_sane(ve_on[i].seconds, false, what + " batch entail");
    }
  }
}

// The split belongs to the call: a thread that asks gets it on every call, a thread beside it
// that does not never does, and both get the serial bits. Workers fill each sample's own.
TEST_F(StepSplitTest, BelongsToTheCallAcrossThreadsAndWorkers) {
  auto engine = load();
  const PreparedImage img = image(*engine, "cap_00002.png");
  const std::string expected = fingerprint(engine->caption(img));
  std::vector<std::string> errors(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 6; ++i) {
        const CaptionResult r = t == 0 ? engine->caption(img, with_split()) : engine->caption(img);
        if (fingerprint(r) != expected) errors[t] += " call " + std::to_string(i) + " differs;";
        if (r.seconds.decoder_split.has_value() != (t == 0))
          errors[t] += " call " + std::to_string(i) + " has the wrong split presence;";
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");

  auto workers = load(ComputeType::kF32, 2);
  const PreparedImage other = image(*workers, "cap_00003.png");
  const std::vector<const PreparedImage*> both{&img, &other};
  std::vector<CaptionResult> r = workers->caption(both, with_split());
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(fingerprint(r[0]), expected);
  for (const CaptionResult& one : r) {
    expect_sane(one.seconds, true, "worker caption");
    EXPECT_EQ(one.seconds.decoder_split->steps,
              static_cast<int64_t>(one.exits.decoder_layers.size()));
  }
  EXPECT_FALSE(workers->caption(both)[1].seconds.decoder_split.has_value());
}

// The accumulator itself: nothing is recorded without one, nested scopes never count twice, and
// the thread's previous accumulator comes back.
TEST(PhaseTimer, NestsWithoutOverlapAndRestoresTheThreadsAccumulator) {
  EXPECT_EQ(phase_times(), nullptr);
  { PhaseScope unused(Phase::kGemm, 100); }  // no accumulator: nothing to do
  count_phase_step();
  PhaseTimes outer_times, inner_times;
  {
    PhaseTimesScope on(&outer_times);
    EXPECT_EQ(phase_times(), &outer_times);
    {
      PhaseScope search(Phase::kSearch);
      {
        PhaseScope projection(Phase::kOutputProjection, 64);
        PhaseScope gemm(Phase::kGemm);
        volatile double sink = 0;
        for (int i = 0; i < 100000; ++i) sink = sink + i;
      }
      count_phase_step();
    }
    {
      PhaseTimesScope off(nullptr);
      EXPECT_EQ(phase_times(), nullptr);
      PhaseScope ignored(Phase::kAttention);
      count_phase_step();
    }
    {
      PhaseTimesScope other(&inner_times);
      PhaseScope attention(Phase::kAttention, 8);
    }
    EXPECT_EQ(phase_times(), &outer_times);
  }
  EXPECT_EQ(phase_times(), nullptr);
  EXPECT_EQ(outer_times.steps, 1);
  EXPECT_EQ(outer_times.open, -1);
  for (double s : outer_times.seconds) EXPECT_GE(s, 0.0);
  EXPECT_GT(outer_times[Phase::kGemm], 0.0);
  EXPECT_EQ(outer_times[Phase::kAttention], 0.0);
  EXPECT_EQ(outer_times.bytes_of(Phase::kOutputProjection), 64.0);
  EXPECT_EQ(outer_times.bytes_of(Phase::kGemm), 0.0);
  EXPECT_GE(inner_times[Phase::kAttention], 0.0);
  EXPECT_EQ(inner_times.bytes_of(Phase::kAttention), 8.0);
  EXPECT_EQ(inner_times.steps, 0);
}

}  // namespace
}  // namespace mue::testing
