// The public API on a random-weight OFA-tiny-shaped model: captioning and entailment run end to
// end from real JPEGs, batched results equal batch-1 results, image-side reuse is exact, and bad
// input is refused with the reason.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "engine_model.h"
#include "mue/mue.h"

namespace mue::testing {
namespace {

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string why;
    dir_ = random_engine_model("tiny_decomposed_64", "tiny", "decomposed", 64, &why);
    skip_reason_ = why;
  }
  void SetUp() override {
    if (dir_.empty()) GTEST_SKIP() << skip_reason_;
    if (coco_image(0).empty()) GTEST_SKIP() << "no COCO images under " << shared_dir();
    EngineOptions opt;
    opt.threads = 2;
    opt.generation = GenerationSettings{};
    opt.generation->beam_size = 3;
    opt.generation->max_len = 6;
    engine_ = Engine::load(dir_.string(), opt);
  }
  static inline std::filesystem::path dir_;
  static inline std::string skip_reason_;
  std::unique_ptr<Engine> engine_;
};

// Thresholds that make this random model exit at varied layers (its cosines lie near 0.9-1).
ExitPolicy varied_policy() {
  ExitPolicy p;
  p.exit_threshold_image = 0.9;
  p.exit_threshold_text = 0.9;
  p.exit_threshold_decoder = 0.9;
  return p;
}

CallOptions with_policy(const ExitPolicy& p) {
  CallOptions call;
  call.exit_policy = p;
  return call;
}

TEST_F(EngineTest, CaptionsARealJpegAtFullDepth) {
  CaptionResult r = engine_->caption(coco_image(3).string());
  ASSERT_FALSE(r.tokens.empty());
  EXPECT_EQ(r.tokens.back(), engine_->config().eos_id);
  EXPECT_LE(static_cast<int>(r.tokens.size()), 7);
  EXPECT_EQ(r.exits.image_layers, 4);
  EXPECT_EQ(r.exits.text_layers, 4);
  EXPECT_EQ(r.exits.decoder_layers.size(), r.tokens.size());
  for (int l : r.exits.decoder_layers) EXPECT_EQ(l, 4);
  EXPECT_DOUBLE_EQ(r.exits.expected_time_reduction(), 0.0);
  EXPECT_GT(r.seconds.resnet, 0);
  EXPECT_GT(r.seconds.decoder, 0);
  EXPECT_EQ(engine_->caption_prompt(),
            (std::vector<int64_t>{0, 99, 473, 5, 2274, 6190, 116, 2}));  // spec 2.2
}

TEST_F(EngineTest, BatchedCaptionsEqualBatchOne) {
  const CallOptions varied = with_policy(varied_policy());
  std::vector<PreparedImage> imgs;
  for (int i : {0, 5, 9}) imgs.push_back(engine_->prepare_image(coco_image(i).string()));
  std::vector<const PreparedImage*> ptrs{&imgs[0], &imgs[1], &imgs[2]};
  std::vector<CaptionResult> batched = engine_->caption(ptrs, varied);
  for (size_t i = 0; i < imgs.size(); ++i) {
    engine_->clear_image_cache();
    CaptionResult single = engine_->caption(imgs[i], varied);
    EXPECT_EQ(single.tokens, batched[i].tokens) << "image " << i;
    EXPECT_NEAR(single.score, batched[i].score, 1e-5);
    EXPECT_EQ(single.exits.image_layers, batched[i].exits.image_layers);
    EXPECT_EQ(single.exits.text_layers, batched[i].exits.text_layers);
    EXPECT_EQ(single.exits.decoder_layers, batched[i].exits.decoder_layers);
  }
}

TEST_F(EngineTest, EntailmentBatchesAndReusesTheImage) {
  const CallOptions varied = with_policy(varied_policy());
  PreparedImage a = engine_->prepare_image(coco_image(1).string());
  PreparedImage b = engine_->prepare_image(coco_image(2).string());
  std::vector<EntailmentQuery> queries{{&a, "a man rides a horse", "a person is outside"},
                                       {&b, "", "two dogs play"},
                                       {&a, "", "the sky is blue"},
                                       {&a, "a kitchen with a stove", "nobody is cooking"}};
  std::vector<EntailmentResult> batched = engine_->entail(queries, varied);
  EXPECT_TRUE(batched[2].exits.image_reused);  // same image as query 0, one image-stream pass
  for (size_t i = 0; i < queries.size(); ++i) {
    const EntailmentResult& r = batched[i];
    EXPECT_NEAR(r.p_entailment + r.p_neutral + r.p_contradiction, 1.0, 1e-9);
    engine_->clear_image_cache();
    EntailmentResult single =
        engine_->entail(*queries[i].image, queries[i].premise, queries[i].hypothesis, varied);
    EXPECT_FALSE(single.exits.image_reused);
    EXPECT_EQ(single.label, r.label);
    EXPECT_NEAR(single.p_entailment, r.p_entailment, 1e-5);
    EXPECT_NEAR(single.p_neutral, r.p_neutral, 1e-5);
    EXPECT_EQ(single.exits.image_layers, r.exits.image_layers);
    EXPECT_EQ(single.exits.text_layers, r.exits.text_layers);
    EXPECT_EQ(single.exits.decoder_layers, r.exits.decoder_layers);
    // Asking again hits the cache and gives the same answer (the image stream's output is
    // reused as it was; only the summation order of the later kernels may differ with the
    // arena's addresses, hence a tolerance far below any decision).
    EntailmentResult again =
        engine_->entail(*queries[i].image, queries[i].premise, queries[i].hypothesis, varied);
    EXPECT_TRUE(again.exits.image_reused);
    EXPECT_EQ(again.label, single.label);
    EXPECT_NEAR(again.p_entailment, single.p_entailment, 1e-5);
    EXPECT_EQ(again.seconds.resnet, 0.0);
  }
}

TEST_F(EngineTest, FixedDepthsAreHonoured) {
  ExitPolicy p;
  p.fixed_depth_image = 2;
  p.fixed_depth_text = 1;
  p.fixed_depth_decoder = 3;
  EntailmentResult r = engine_->entail(coco_image(4).string(), "", "a cat sleeps", with_policy(p));
  EXPECT_EQ(r.exits.image_layers, 2);
  EXPECT_EQ(r.exits.text_layers, 1);
  EXPECT_EQ(r.exits.decoder_layers, std::vector<int>{3});
  // 1 - (1.5 + 3) / 8
  EXPECT_DOUBLE_EQ(r.exits.expected_time_reduction(), 1.0 - 4.5 / 8.0);
}

TEST_F(EngineTest, ImagesFromMemoryEqualImagesFromFiles) {
  std::filesystem::path path = coco_image(2);
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  PreparedImage from_file = engine_->prepare_image(path.string());
  PreparedImage from_memory = engine_->prepare_image(bytes.data(), bytes.size(), "upload.jpg");
  EXPECT_EQ(from_file.content_key, from_memory.content_key);
  ASSERT_EQ(from_file.pixels.shape(), (Shape{64, 64, 3}));
  EXPECT_EQ(
      0, std::memcmp(from_file.pixels.raw(), from_memory.pixels.raw(), from_file.pixels.nbytes()));
  try {
    engine_->prepare_image(bytes.data(), bytes.size() / 3, "half-upload.jpg");
    FAIL() << "a truncated JPEG was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("half-upload.jpg"), std::string::npos) << e.what();
  }
}

TEST_F(EngineTest, BadInputIsRefusedWithTheReason) {
  auto message = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  std::string missing = message([&] { engine_->caption("/nonexistent/cat.jpg"); });
  EXPECT_NE(missing.find("/nonexistent/cat.jpg"), std::string::npos) << missing;
  std::filesystem::path junk = std::filesystem::path(MUE_BINARY_DIR) / "not_an_image.jpg";
  std::ofstream(junk) << "hello";
  EXPECT_NE(message([&] { engine_->caption(junk.string()); }).find("not_an_image.jpg"),
            std::string::npos);
  ExitPolicy bad;
  bad.exit_threshold_text = 1.5;
  EXPECT_NE(message([&] { engine_->check_exit_policy(bad); }).find("exit_threshold_text"),
            std::string::npos);
  EXPECT_NE(message([&] {
              engine_->caption(coco_image(0).string(), with_policy(bad));
            }).find("exit_threshold_text"),
            std::string::npos);
  ExitPolicy too_deep;
  too_deep.fixed_depth_decoder = engine_->config().decoder_layers + 1;
  const std::string deep = message([&] { engine_->check_exit_policy(too_deep); });
  EXPECT_NE(deep.find("fixed_depth_decoder = " + std::to_string(too_deep.fixed_depth_decoder) +
                      " exceeds the model's " + std::to_string(engine_->config().decoder_layers) +
                      " decoder layers"),
            std::string::npos)
      << deep;
  ExitPolicy at_depth;  // the model's own depth is a valid fixed depth
  at_depth.fixed_depth_image = engine_->config().encoder_layers;
  EXPECT_EQ(message([&] { engine_->check_exit_policy(at_depth); }), "");
  PreparedImage img = engine_->prepare_image(coco_image(0).string());
  EXPECT_NE(message([&] { engine_->entail(img, "", "  "); }).find("hypothesis is empty"),
            std::string::npos);
  const std::string cleaned = message([&] { engine_->entail(img, "", "...!!!"); });
  EXPECT_NE(cleaned.find("hypothesis is empty after OFA's text cleaning"), std::string::npos)
      << cleaned;
  EXPECT_NE(cleaned.find("\"...!!!\" left \"\""), std::string::npos) << cleaned;
  CallOptions no_beams;
  no_beams.generation = engine_->default_generation();
  no_beams.generation->beam_size = 0;
  const std::string beams = message([&] { engine_->caption(img, no_beams); });
  EXPECT_NE(beams.find("beam_size must be at least 1, got 0"), std::string::npos) << beams;
  EngineOptions negative;
  negative.workers = -1;
  const std::string workers = message([&] { Engine::load(dir_.string(), negative); });
  EXPECT_NE(workers.find("workers = -1 is negative"), std::string::npos) << workers;
  EXPECT_NE(message([&] { Engine::load("/nonexistent/model"); }).find("/nonexistent/model"),
            std::string::npos);
}

}  // namespace
}  // namespace mue::testing
