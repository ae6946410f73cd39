// Determinism (issue 18, item 5): at a fixed thread count the same input gives the same bits in
// separate processes, and a batch's composition never changes a sample's exits or answer.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "bench_app_test.h"
#include "mue/mue.h"

namespace mue::testing {
namespace {

namespace fs = std::filesystem;

const fs::path kModel = fs::path(MUE_SOURCE_DIR) / "models" / "mue-scenes-small";

// The CLI's JSON result without its timings (the only field allowed to differ between runs).
nlohmann::json run_without_timings(const std::string& args, const fs::path& scratch) {
  const AppRun run = run_app("mue", args, scratch);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  nlohmann::json result = nlohmann::json::parse(run.out, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(result.is_discarded()) << run.out;
  if (result.is_object()) {
    EXPECT_TRUE(result.contains("seconds")) << run.out;
    result.erase("seconds");
  }
  return result;
}

TEST(Determinism, TwoProcessesGiveTheSameBits) {
  ASSERT_TRUE(app_built("mue"));
  const fs::path scratch = fresh_temp_dir("determinism");
  const std::string image = shell_quote((kModel / "example.png").string());
  const std::string runs[] = {
      // The model's calibrated policies (early exits), beam search and one entailment pass.
      "caption " + image + " --json --threads 2",
      "entail " + image + " --premise 'six objects' --hypothesis 'a red pant' --json --threads 2",
      // Full depth, and the reference KV-cache mode with decoder exits.
      "caption " + image + " --json --threads 2 --fixed-depth 6,6,6 --beam 3",
      "caption " + image + " --json --threads 2 --kv-cache reference --decoder-threshold 0.5",
  };
  for (const std::string& args : runs) {
    SCOPED_TRACE(args);
    const nlohmann::json first = run_without_timings(args, scratch);
    const nlohmann::json second = run_without_timings(args, scratch);
    // Doubles print with round-trip precision, so equal text is equal bits.
    EXPECT_EQ(first.dump(), second.dump());
  }
  fs::remove_all(scratch);
}

void expect_same_sample(const EntailmentResult& batched, const EntailmentResult& alone) {
  EXPECT_EQ(batched.label, alone.label);
  EXPECT_EQ(batched.exits.image_layers, alone.exits.image_layers);
  EXPECT_EQ(batched.exits.text_layers, alone.exits.text_layers);
  EXPECT_EQ(batched.exits.decoder_layers, alone.exits.decoder_layers);
  EXPECT_NEAR(batched.p_entailment, alone.p_entailment, 1e-5);
  EXPECT_NEAR(batched.p_neutral, alone.p_neutral, 1e-5);
  EXPECT_NEAR(batched.p_contradiction, alone.p_contradiction, 1e-5);
}

TEST(Determinism, BatchCompositionChangesNoSample) {
  EngineOptions options;
  options.threads = 2;
  auto engine = Engine::load(kModel.string(), options);
  const PreparedImage scene = engine->prepare_image((kModel / "example.png").string());
  // A second, different image: the scene mirrored left to right.
  PreparedImage mirrored = scene;
  mirrored.pixels = scene.pixels.clone();
  const int64_t h = scene.pixels.shape()[0], w = scene.pixels.shape()[1];
  const float* src = scene.pixels.data<float>();
  float* dst = mirrored.pixels.data<float>();
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) dst[(y * w + x) * 3 + c] = src[(y * w + (w - 1 - x)) * 3 + c];
  mirrored.content_key[0] ^= 0x9e3779b97f4a7c15ull;
  mirrored.name = "mirrored";

  const std::vector<EntailmentQuery> queries = {
      {&scene, "six objects", "a red pant"},
      {&scene, "", "a green ankle boot"},
      {&mirrored, "", "a red pant and a green ankle boot"},
      {&scene, "", "a blue bag"},
      {&mirrored, "two objects", "a shirt among many objects on the floor"},
  };
  const ExitPolicy calibrated = ExitPolicy::load((kModel / "exit_policy.entail.json").string());
  ExitPolicy varied;  // the decoder exits after 5 layers for some of these samples, 6 for others
  varied.exit_threshold_image = 0.98;
  varied.exit_threshold_text = 0.98;
  varied.exit_threshold_decoder = 0.98;
  const ExitPolicy full = ExitPolicy::full_depth();
  for (const ExitPolicy* policy : std::vector<const ExitPolicy*>{&full, &calibrated, &varied}) {
    SCOPED_TRACE(policy->to_json().dump());
    CallOptions call;
    call.exit_policy = *policy;
    std::vector<EntailmentResult> alone;
    for (const EntailmentQuery& q : queries) {
      engine->clear_image_cache();
      alone.push_back(engine->entail(*q.image, q.premise, q.hypothesis, call));
    }
    if (policy == &varied) {
      // The batch mixes samples that exit at different layers (else the test shows less).
      bool mixed = false;
      for (const EntailmentResult& r : alone)
        mixed |= r.exits.decoder_layers != alone[0].exits.decoder_layers;
      EXPECT_TRUE(mixed);
    }
    // The whole batch, the batch reversed, and a pair.
    const std::vector<EntailmentResult> all = engine->entail(queries, call);
    ASSERT_EQ(all.size(), queries.size());
    for (size_t i = 0; i < queries.size(); ++i) {
      SCOPED_TRACE("query " + std::to_string(i) + " in the whole batch");
      expect_same_sample(all[i], alone[i]);
    }
    engine->clear_image_cache();
    const std::vector<EntailmentQuery> reversed(queries.rbegin(), queries.rend());
    const std::vector<EntailmentResult> back = engine->entail(reversed, call);
    ASSERT_EQ(back.size(), queries.size());
    for (size_t i = 0; i < queries.size(); ++i) {
      SCOPED_TRACE("query " + std::to_string(i) + " in the reversed batch");
      expect_same_sample(back[queries.size() - 1 - i], alone[i]);
    }
    const std::vector<EntailmentResult> pair = engine->entail({queries[4], queries[1]}, call);
    ASSERT_EQ(pair.size(), 2u);
    expect_same_sample(pair[0], alone[4]);
    expect_same_sample(pair[1], alone[1]);
  }
}

}  // namespace
}  // namespace mue::testing
