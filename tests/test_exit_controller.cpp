#include <gtest/gtest.h>

#include <cmath>

#include "model/exit_controller.h"
#include "mue/tensor.h"

namespace mue {
namespace {

TEST(ExitController, StaticThresholdsPerStack) {
  ExitPolicy p;
  p.exit_threshold_image = 0.9;
  p.exit_threshold_text = 0.99;
  ExitController c(p);
  EXPECT_TRUE(c.should_exit(ExitStack::kImage, 0, 6, 0.95));
  EXPECT_FALSE(c.should_exit(ExitStack::kImage, 0, 6, 0.9));  // strictly greater
  EXPECT_FALSE(c.should_exit(ExitStack::kText, 0, 6, 0.95));
  EXPECT_TRUE(c.should_exit(ExitStack::kText, 2, 6, 0.995));
  EXPECT_FALSE(c.should_exit(ExitStack::kDecoder, 2, 6, 0.999999));  // 1.0: never
  EXPECT_TRUE(c.should_exit(ExitStack::kDecoder, 5, 6, 0.0));        // the last layer ends it
  EXPECT_TRUE(c.uses_similarity(ExitStack::kImage));
  EXPECT_FALSE(c.uses_similarity(ExitStack::kDecoder));
}

TEST(ExitController, ThresholdOneNeverExitsEvenAboveOne) {
  ExitController c(ExitPolicy::full_depth());
  EXPECT_FALSE(c.should_exit(ExitStack::kText, 0, 6, 1.0 + 1e-12));
}

TEST(ExitController, DecayingScheduleOfTheReleasedCode) {
  ExitPolicy p;
  p.exit_threshold_decoder = 0.9;
  p.decoder_schedule = DecoderSchedule::kDecaying;
  ExitController c(p);
  // max_len 16: steps 0-5 never exit (step < 17/3); spec 1.4 gives 0.876 at step 6 and 0.847 at 16.
  for (int step = 0; step <= 5; ++step) EXPECT_EQ(c.decoder_threshold(step, 16), 1.0);
  EXPECT_NEAR(c.decoder_threshold(6, 16), 0.81 + 0.1 * std::exp(-7.0 / 17.0), 1e-12);
  EXPECT_NEAR(c.decoder_threshold(6, 16), 0.876, 1e-3);
  EXPECT_NEAR(c.decoder_threshold(16, 16), 0.847, 1e-3);
  EXPECT_FALSE(c.should_exit(ExitStack::kDecoder, 0, 6, 0.99, 3, 16));
  EXPECT_TRUE(c.should_exit(ExitStack::kDecoder, 0, 6, 0.99, 6, 16));
}

TEST(ExitController, CalmSchedule) {
  ExitPolicy p;
  p.exit_threshold_decoder = 0.99;
  p.decoder_schedule = DecoderSchedule::kCalm;
  p.calm_beta = 0.95;
  p.calm_tau = 1.0;
  ExitController c(p);
  EXPECT_NEAR(c.decoder_threshold(0, 16), 0.95 * 0.99 + 0.05 * std::exp(-1.0 / 17.0), 1e-12);
  EXPECT_GT(c.decoder_threshold(0, 16), c.decoder_threshold(10, 16));  // decays with t
}

TEST(ExitController, FixedDepthOverridesThresholds) {
  ExitPolicy p;
  p.fixed_depth_image = 2;
  p.exit_threshold_image = 0.5;
  ExitController c(p);
  EXPECT_FALSE(c.should_exit(ExitStack::kImage, 0, 6, 0.99));
  EXPECT_TRUE(c.should_exit(ExitStack::kImage, 1, 6, -1.0));
  EXPECT_FALSE(c.uses_similarity(ExitStack::kImage));
}

TEST(ExitPolicy, JsonRoundTripAndBadValues) {
  ExitPolicy p;
  p.exit_threshold_text = 0.97;
  p.decoder_schedule = DecoderSchedule::kCalm;
  p.skipped_layer_cache = SkippedLayerCache::kReference;
  ExitPolicy q = ExitPolicy::from_json(p.to_json());
  EXPECT_EQ(q.exit_threshold_text, 0.97);
  EXPECT_EQ(q.decoder_schedule, DecoderSchedule::kCalm);
  EXPECT_EQ(q.skipped_layer_cache, SkippedLayerCache::kReference);

  auto error_of = [](const nlohmann::json& j) -> std::string {
    try {
      ExitPolicy::from_json(j, "policy.json");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(error_of({{"exit_threshold_image", 1.5}}).find("exit_threshold_image"),
            std::string::npos);
  EXPECT_NE(error_of({{"exit_threshold_text", 0.0}}).find("outside (0, 1]"), std::string::npos);
  EXPECT_NE(error_of({{"exit_threshold_text", "high"}}).find("must be a number"),
            std::string::npos);
  EXPECT_NE(error_of({{"decoder_schedule", "linear"}}).find("decoder_schedule"), std::string::npos);
  EXPECT_NE(error_of({{"treshold", 0.9}}).find("unknown field \"treshold\""), std::string::npos);
  EXPECT_NE(error_of({{"fixed_depth_text", -1}}).find("negative"), std::string::npos);
  EXPECT_THROW(ExitPolicy::load("/nonexistent/policy.json"), Error);
  ExitPolicy bad;
  bad.exit_threshold_decoder = std::nan("");
  EXPECT_THROW(ExitController{bad}, Error);
}

}  // namespace
}  // namespace mue

namespace mue {
namespace {

TEST(ExitController, SinglePassUsesTheStaticThresholdWhateverTheSchedule) {
  ExitPolicy p;
  p.exit_threshold_decoder = 0.9;
  p.decoder_schedule = DecoderSchedule::kDecaying;
  ExitController c(p);
  EXPECT_EQ(c.decoder_threshold(-1, 0), 0.9);
  EXPECT_TRUE(c.should_exit(ExitStack::kDecoder, 0, 6, 0.95));  // entailment: no step
}

}  // namespace
}  // namespace mue
