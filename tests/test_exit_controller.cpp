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

// Signals that count how often each was computed.
struct CountedSignals {
  int cosines = 0, confidences = 0;
  ExitSignals make(double cosine, double confidence) {
    return ExitSignals(
        [this, cosine] {
          ++cosines;
          return cosine;
        },
        [this, confidence] {
          ++confidences;
          return confidence;
        });
  }
};

TEST(ExitController, PerLayerThresholdsReplaceTheStacksOne) {
  ExitPolicy p;
  p.exit_threshold_image = 0.5;  // ignored: the list replaces it
  p.exit_thresholds_image = {0.9, 1.0, 0.8};
  p.exit_thresholds_decoder = {1.0, 0.7, 1.0, 0.6, 1.0};
  ExitController c(p);
  EXPECT_TRUE(c.should_exit(ExitStack::kImage, 0, 4, 0.95));
  EXPECT_FALSE(c.should_exit(ExitStack::kImage, 0, 4, 0.85));
  EXPECT_FALSE(c.should_exit(ExitStack::kImage, 1, 4, 0.999));  // 1.0 after layer 2: never
  EXPECT_TRUE(c.should_exit(ExitStack::kImage, 2, 4, 0.85));
  EXPECT_TRUE(c.should_exit(ExitStack::kImage, 3, 4, 0.0));  // the last layer
  EXPECT_DOUBLE_EQ(c.threshold(ExitStack::kDecoder, 3, 6), 0.6);
  EXPECT_TRUE(c.uses_similarity(ExitStack::kImage));
  EXPECT_FALSE(c.uses_similarity(ExitStack::kText));
  // A list of all 1.0 is full depth.
  ExitPolicy ones;
  ones.exit_thresholds_text = {1.0, 1.0, 1.0};
  EXPECT_FALSE(ExitController(ones).can_exit(ExitStack::kText));
  EXPECT_FALSE(static_cast<bool>(ExitController(ones).decision(ExitStack::kText, 4)));
}

TEST(ExitController, PerLayerListsMustFitTheStack) {
  ExitPolicy p;
  p.exit_thresholds_decoder = {0.9, 0.9};
  ExitController c(p);
  try {
    c.decision(ExitStack::kDecoder, 6);
    FAIL() << "a list of 2 for 6 layers was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exit_thresholds_decoder has 2 values"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("needs 5"), std::string::npos) << e.what();
  }
  EXPECT_THROW(c.check_layers(6, 6), Error);
  EXPECT_NO_THROW(c.check_layers(6, 3));
  EXPECT_NO_THROW(c.decision(ExitStack::kDecoder, 3));
}

TEST(ExitController, DecisionReadsOnlyTheRulesSignalAndOnlyWhereItCanExit) {
  ExitPolicy p;
  p.decoder_rule = DecoderRule::kConfidence;
  p.confidence_thresholds = {1.0, 0.8, 0.9};
  p.exit_threshold_decoder = 0.5;  // the cosine's: unused under the confidence rule
  ExitController c(p);
  ExitDecision d = c.decision(ExitStack::kDecoder, 4);
  ASSERT_TRUE(static_cast<bool>(d));
  CountedSignals n;
  EXPECT_FALSE(d(0, 0, n.make(0.99, 0.99)));  // threshold 1.0: nothing computed
  EXPECT_EQ(n.cosines + n.confidences, 0);
  EXPECT_TRUE(d(1, 0, n.make(0.0, 0.85)));
  EXPECT_FALSE(d(2, 0, n.make(0.99, 0.85)));
  EXPECT_EQ(n.cosines, 0);
  EXPECT_EQ(n.confidences, 2);
  // Encoder stacks keep the cosine.
  ExitPolicy q = p;
  q.exit_threshold_text = 0.9;
  ExitController ct(q);
  ExitDecision text = ct.decision(ExitStack::kText, 4);
  CountedSignals m;
  EXPECT_TRUE(text(0, 0, m.make(0.95, 0.0)));
  EXPECT_EQ(m.cosines, 1);
  EXPECT_EQ(m.confidences, 0);
}

TEST(ExitController, ConfidenceThresholdFollowsTheScheduleInGeneration) {
  ExitPolicy p;
  p.decoder_rule = DecoderRule::kConfidence;
  p.confidence_threshold = 0.8;
  p.decoder_schedule = DecoderSchedule::kCalm;
  ExitController c(p);
  double want = 0.9 * 0.8 + 0.1 * std::exp(-3.0 / 17.0);
  EXPECT_NEAR(c.threshold(ExitStack::kDecoder, 0, 6, 2, 16), want, 1e-12);
  EXPECT_NEAR(c.decoder_threshold(2, 16), want, 1e-12);
  EXPECT_DOUBLE_EQ(c.threshold(ExitStack::kDecoder, 0, 6), 0.8);  // one pass: static
  EXPECT_TRUE(c.should_exit(ExitStack::kDecoder, 0, 6, want + 1e-9, 2, 16));
  EXPECT_FALSE(c.should_exit(ExitStack::kDecoder, 0, 6, want, 2, 16));
}

TEST(ExitSignals, ComputedOnceAndMissingConfidenceIsAClearError) {
  int calls = 0;
  ExitSignals s([&] { return ++calls * 0.5; }, {});
  EXPECT_EQ(s.cosine(), 0.5);
  EXPECT_EQ(s.cosine(), 0.5);
  EXPECT_EQ(calls, 1);
  try {
    s.confidence();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("confidence"), std::string::npos) << e.what();
  }
}

TEST(ExitPolicy, PerLayerAndConfidenceFieldsRoundTrip) {
  ExitPolicy p;
  p.exit_thresholds_image = {0.9, 0.95};
  p.exit_thresholds_text = {1.0, 0.7};
  p.exit_thresholds_decoder = {0.5};
  p.decoder_rule = DecoderRule::kConfidence;
  p.confidence_threshold = 0.75;
  p.confidence_thresholds = {0.99, 0.9, 1.0};
  p.confidence_measure = ConfidenceMeasure::kMargin;
  nlohmann::json j = p.to_json();
  EXPECT_EQ(j["decoder_rule"], "confidence");
  EXPECT_EQ(j["confidence_measure"], "margin");
  EXPECT_EQ(j["confidence_thresholds"], nlohmann::json({0.99, 0.9, 1.0}));
  ExitPolicy q = ExitPolicy::from_json(j);
  EXPECT_EQ(q.to_json(), j);
  EXPECT_EQ(q.exit_thresholds_text, p.exit_thresholds_text);
  EXPECT_EQ(q.decoder_rule, DecoderRule::kConfidence);
  // Old policy files (no new fields) read as the cosine rule with single thresholds.
  ExitPolicy old = ExitPolicy::from_json({{"exit_threshold_decoder", 0.9}});
  EXPECT_EQ(old.decoder_rule, DecoderRule::kCosine);
  EXPECT_TRUE(old.exit_thresholds_decoder.empty());
  EXPECT_EQ(old.confidence_threshold, 1.0);
}

TEST(ExitPolicy, BadPerLayerAndConfidenceFieldsAreClearErrors) {
  auto message = [](const nlohmann::json& j) -> std::string {
    try {
      ExitPolicy::from_json(j, "policy.json");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  auto has = [](const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
  };
  std::string m = message({{"exit_thresholds_text", {0.9, 1.5}}});
  EXPECT_TRUE(has(m, "exit_thresholds_text[1]") && has(m, "outside (0, 1]")) << m;
  m = message({{"confidence_thresholds", {0.0}}});
  EXPECT_TRUE(has(m, "confidence_thresholds[0]")) << m;
  m = message({{"exit_thresholds_decoder", 0.9}});
  EXPECT_TRUE(has(m, "must be an array")) << m;
  m = message({{"exit_thresholds_image", {0.9, "x"}}});
  EXPECT_TRUE(has(m, "exit_thresholds_image\"[1] must be a number")) << m;
  m = message({{"decoder_rule", "entropy"}});
  EXPECT_TRUE(has(m, "decoder_rule must be one of") && has(m, "\"confidence\"")) << m;
  m = message({{"confidence_measure", 3}});
  EXPECT_TRUE(has(m, "confidence_measure must be one of")) << m;
  m = message({{"confidence_threshold", 1.2}});
  EXPECT_TRUE(has(m, "confidence_threshold")) << m;
  for (const std::string& text : {m}) EXPECT_TRUE(has(text, "policy.json")) << text;
}

}  // namespace
}  // namespace mue
