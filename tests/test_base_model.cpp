// A random-weight OFA-base-shaped model (about 182M parameters) loads by mmap, runs a
// full-depth encode of a 480x480 image, and decodes 16 tokens incrementally with the same
// logits as the whole-sequence decoder.
#include <gtest/gtest.h>

#include <cmath>

#include "engine_model.h"
#include "model/ofa_model.h"
#include "mue/mue.h"

namespace mue::testing {
namespace {

TEST(BaseModel, LoadsEncodesAt480AndDecodes16Tokens) {
  std::string why;
  auto dir = random_engine_model("base_decomposed_480", "base", "decomposed", 480, &why);
  if (dir.empty()) GTEST_SKIP() << why;
  auto model = OfaModel::load(dir.string());
  const ModelConfig& c = model->config();
  ASSERT_EQ(c.d_model, 768);
  ASSERT_EQ(c.resnet_layers, (std::vector<int>{3, 4, 23}));

  Tensor images = Tensor::empty({1, 480, 480, 3});
  for (int64_t i = 0; i < images.numel(); ++i)
    images.data<float>()[i] = std::sin(0.001f * static_cast<float>(i));
  std::vector<int64_t> prompt{0, 99, 473, 5, 2274, 6190, 116, 2};  // spec 2.2
  Tensor src = Tensor::empty({1, 8}, DType::kI64);
  std::copy(prompt.begin(), prompt.end(), src.data<int64_t>());
  EncoderOutput enc = model->encode(images, src);
  ASSERT_EQ(enc.states.shape(), (Shape{1, 900 + 8, 768}));  // 30x30 image tokens
  EXPECT_EQ(enc.image_layers[0], 6);
  for (int64_t i = 0; i < enc.states.numel(); ++i)
    ASSERT_TRUE(std::isfinite(enc.states.data<float>()[i]));

  constexpr int64_t kSteps = 16;
  Tensor prev = Tensor::empty({1, kSteps}, DType::kI64);
  for (int64_t t = 0; t < kSteps; ++t) prev.data<int64_t>()[t] = t == 0 ? 0 : 100 + 37 * t;
  Tensor full = model->decode_full(enc, prev);
  DecoderState st = model->start_decoding(enc, 1, kSteps);
  int64_t v = c.vocab_size;
  double worst = 0, scale = 1;
  for (int64_t t = 0; t < kSteps; ++t) {
    Tensor step = model->decode_step(st, {prev.data<int64_t>()[t]});
    for (int64_t k = 0; k < v; ++k) {
      double want = full.data<float>()[t * v + k];
      worst = std::max(worst, std::fabs(step.data<float>()[k] - want));
      scale = std::max(scale, std::fabs(want));
    }
  }
  EXPECT_LE(worst / scale, 1e-4) << "incremental vs whole-sequence logits, max abs " << worst;
}

}  // namespace
}  // namespace mue::testing
