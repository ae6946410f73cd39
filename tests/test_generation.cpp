// MuE exits, entailment scoring and beam search against the PyTorch reference
// (tests/fixtures/exits, tools/make_exit_fixtures.py), in both skipped-layer cache modes; and
// batched runs against batch-1 runs.
#include <gtest/gtest.h>

#include "parity_fixture.h"
#include "tasks/generation.h"

namespace mue::testing {
namespace {

constexpr double kTolerance = 1e-4;

struct ExitCase {
  ParityCase base;
  ExitPolicy policy;
  GenerationSettings generation;
  nlohmann::json info;
};

ExitCase load_exit_case(const std::filesystem::path& dir) {
  ExitCase c;
  c.base = load_parity_case(dir, std::filesystem::path(MUE_BINARY_DIR) / "exit_work");
  c.info = read_json(dir / "case.json");
  c.policy = ExitPolicy::from_json(c.info.at("policy"), "case " + dir.string());
  const auto& g = c.info.at("generation");
  c.generation.beam_size = g.at("beam_size");
  c.generation.max_len = g.at("max_len");
  c.generation.min_len = g.at("min_len");
  c.generation.no_repeat_ngram_size = g.at("no_repeat_ngram_size");
  c.generation.length_penalty = g.at("length_penalty");
  return c;
}

std::vector<int64_t> row(const Tensor& t, int64_t b) {
  int64_t n = t.numel() / t.dim(0);
  return std::vector<int64_t>(t.data<int64_t>() + b * n, t.data<int64_t>() + (b + 1) * n);
}

// One sample of a batch as its own batch of 1.
Tensor take(const Tensor& t, int64_t b) {
  Tensor one = t.slice_rows(b, b + 1).clone();
  return one;
}

struct Outcome {
  EncoderOutput enc;
  std::vector<int> ve_layers;
  Tensor ve_logits;  // [B, V]
  std::map<std::string, std::vector<GenerationResult>> generated;
};

Outcome run(OfaModel& model, const ExitCase& c, const Tensor& images, const Tensor& src,
            const Tensor& prev) {
  ExitController ctl(c.policy);
  int enc_layers = model.num_encoder_layers(), dec_layers = model.num_decoder_layers();
  Outcome o;
  o.enc = model.encode(images, src, ctl.decision(ExitStack::kImage, enc_layers),
                       ctl.decision(ExitStack::kText, enc_layers));
  // The confidence rule's VE answers (as entailment's three); none: the vocabulary.
  std::vector<int64_t> answers = c.info.value("ve_confidence_ids", std::vector<int64_t>{});
  o.ve_logits =
      model.decode_full(o.enc, prev, ctl.decision(ExitStack::kDecoder, dec_layers), &o.ve_layers,
                        true, nullptr, answers.empty() ? nullptr : &answers);
  for (auto mode : {SkippedLayerCache::kPropagate, SkippedLayerCache::kReference}) {
    ExitPolicy p = c.policy;
    p.skipped_layer_cache = mode;
    o.generated[skipped_layer_cache_name(mode)] =
        beam_search(model, o.enc, c.generation, ExitController(p));
  }
  return o;
}

TEST(ExitParity, MatchesTheReferenceInBothCacheModes) {
  auto dirs = parity_case_dirs(std::filesystem::path(MUE_SOURCE_DIR) / "tests/fixtures/exits");
  ASSERT_FALSE(dirs.empty());
  for (const auto& dir : dirs) {
    ExitCase c = load_exit_case(dir);
    SCOPED_TRACE("case " + c.base.name);
    const auto& io = *c.base.io;
    Tensor images = nchw_to_nhwc(io.get("patch_images"));
    Tensor src = io.get("src_tokens"), prev = io.get("prev_output_tokens");
    Outcome o = run(*c.base.model, c, images, src, prev);
    int64_t batch = src.dim(0), v = c.base.config.vocab_size;

    for (int64_t b = 0; b < batch; ++b) {
      EXPECT_EQ(o.enc.image_layers[b], io.get("image_layers").data<int64_t>()[b]) << "sample " << b;
      EXPECT_EQ(o.enc.text_layers[b], io.get("text_layers").data<int64_t>()[b]) << "sample " << b;
      EXPECT_EQ(o.ve_layers[b], io.get("ve_decoder_layers").data<int64_t>()[b]) << "sample " << b;
    }
    // Encoder output at valid positions.
    Tensor want = io.get("encoder_out");
    int64_t s_len = o.enc.states.dim(1), d = c.base.config.d_model, l = src.dim(1);
    Diff enc_diff;
    for (int64_t b = 0; b < batch; ++b) {
      int64_t valid =
          o.enc.image_tokens + count_valid(src.data<int64_t>() + b * l, l, c.base.config.pad_id);
      for (int64_t i = 0; i < valid * d; ++i)
        accumulate(enc_diff, o.enc.states.data<float>()[b * s_len * d + i],
                   want.data<float>()[b * s_len * d + i]);
    }
    EXPECT_LE(enc_diff.relative(), kTolerance) << "encoder_out " << enc_diff.max_abs;
    // Entailment logits at the answer position.
    Tensor ids = io.get("ve_logits_ids");
    Diff ve;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t k = 0; k < ids.dim(0); ++k)
        accumulate(ve, o.ve_logits.data<float>()[b * v + ids.data<int64_t>()[k]],
                   io.get("ve_logits").data<float>()[b * ids.dim(0) + k]);
    EXPECT_LE(ve.relative(), kTolerance) << "ve_logits " << ve.max_abs;
    // Generation: the same tokens, scores and per-step decoder depths.
    for (const auto& [mode, results] : o.generated) {
      SCOPED_TRACE("cache mode " + mode);
      Tensor tokens = io.get("gen_tokens_" + mode), layers = io.get("gen_decoder_layers_" + mode);
      const auto& scores = c.info.at("gen_scores_float64").at(mode);
      for (int64_t b = 0; b < batch; ++b) {
        std::vector<int64_t> want_tokens;
        for (int64_t t : row(tokens, b))
          if (t != c.base.config.pad_id) want_tokens.push_back(t);
        EXPECT_EQ(results[b].hypotheses.front().tokens, want_tokens) << "sample " << b;
        EXPECT_NEAR(results[b].hypotheses.front().score, scores.at(b).get<double>(), kTolerance);
        std::vector<int> want_layers;
        for (int64_t x : row(layers, b))
          if (x != 0) want_layers.push_back(static_cast<int>(x));
        EXPECT_EQ(results[b].decoder_layers, want_layers) << "sample " << b;
      }
    }
  }
}

TEST(ExitParity, BatchedEqualsBatchOne) {
  auto dirs = parity_case_dirs(std::filesystem::path(MUE_SOURCE_DIR) / "tests/fixtures/exits");
  for (const auto& dir : dirs) {
    ExitCase c = load_exit_case(dir);
    const auto& io = *c.base.io;
    Tensor images = nchw_to_nhwc(io.get("patch_images"));
    Tensor src = io.get("src_tokens"), prev = io.get("prev_output_tokens");
    int64_t batch = src.dim(0), v = c.base.config.vocab_size;
    if (batch == 1) continue;
    SCOPED_TRACE("case " + c.base.name);
    Outcome all = run(*c.base.model, c, images, src, prev);
    for (int64_t b = 0; b < batch; ++b) {
      // Trim the sample's own padding so that it runs exactly as it would alone.
      int64_t l =
          count_valid(src.data<int64_t>() + b * src.dim(1), src.dim(1), c.base.config.pad_id);
      int64_t t =
          count_valid(prev.data<int64_t>() + b * prev.dim(1), prev.dim(1), c.base.config.pad_id);
      Tensor src1 = Tensor::empty({1, l}, DType::kI64), prev1 = Tensor::empty({1, t}, DType::kI64);
      std::copy_n(src.data<int64_t>() + b * src.dim(1), l, src1.data<int64_t>());
      std::copy_n(prev.data<int64_t>() + b * prev.dim(1), t, prev1.data<int64_t>());
      Outcome one = run(*c.base.model, c, take(images, b), src1, prev1);
      EXPECT_EQ(one.enc.image_layers[0], all.enc.image_layers[b]);
      EXPECT_EQ(one.enc.text_layers[0], all.enc.text_layers[b]);
      EXPECT_EQ(one.ve_layers[0], all.ve_layers[b]);
      Diff logits;
      for (int64_t k = 0; k < v; ++k)
        accumulate(logits, one.ve_logits.data<float>()[k], all.ve_logits.data<float>()[b * v + k]);
      // Within 1e-5 of the logits' scale: only fp32 summation order differs with the batch.
      EXPECT_LE(logits.relative(), 1e-5) << "sample " << b << ", max abs diff " << logits.max_abs;
      for (const auto& [mode, results] : all.generated) {
        const GenerationResult& single = one.generated.at(mode)[0];
        EXPECT_EQ(single.hypotheses.front().tokens, results[b].hypotheses.front().tokens);
        EXPECT_NEAR(single.hypotheses.front().score, results[b].hypotheses.front().score, 1e-5);
        EXPECT_EQ(single.decoder_layers, results[b].decoder_layers);
      }
    }
  }
}

}  // namespace
}  // namespace mue::testing
