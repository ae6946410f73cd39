// Loads a parity fixture (tools/make_fixtures.py): the model is rebuilt from the synthetic
// recipe, and io.safetensors holds the inputs and the PyTorch reference's outputs.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "io/safetensors.h"
#include "model/ofa_model.h"
#include "synthetic_weights.h"

namespace mue::testing {

struct ParityCase {
  std::string name;
  ModelConfig config;
  std::unique_ptr<OfaModel> model;
  std::shared_ptr<SafeTensorsFile> io;
};

inline nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  if (!in) throw Error("cannot open " + p.string());
  return nlohmann::json::parse(in);
}

// Builds the case's model (weights written once into `work_dir`) and maps its io file.
inline ParityCase load_parity_case(const std::filesystem::path& dir,
                                   const std::filesystem::path& work_dir) {
  ParityCase c;
  c.name = dir.filename().string();
  c.config = ModelConfig::load((dir / "config.json").string());
  nlohmann::json info = read_json(dir / "case.json");
  std::vector<std::pair<std::string, Shape>> params;
  for (const auto& p : info.at("parameters"))
    params.emplace_back(p.at(0).get<std::string>(), p.at(1).get<Shape>());
  std::filesystem::create_directories(work_dir);
  std::string weights = (work_dir / (c.name + ".safetensors")).string();
  // Tests run as parallel processes: write under a private name, then rename atomically, so a
  // reader never maps a half-written file (the content is the same whoever writes it).
  std::string tmp = weights + ".tmp" + std::to_string(::getpid());
  write_synthetic_model(tmp, params, info.at("seed").get<uint64_t>());
  std::filesystem::rename(tmp, weights);
  c.model = OfaModel::load(c.config, weights);
  c.io = SafeTensorsFile::open((dir / "io.safetensors").string());
  return c;
}

// NCHW [B,3,H,W] (the reference's layout) to NHWC [B,H,W,3] (ours).
inline Tensor nchw_to_nhwc(const Tensor& x) {
  int64_t b = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  Tensor out = Tensor::empty({b, h, w, c});
  const float* s = x.data<float>();
  float* d = out.data<float>();
  for (int64_t n = 0; n < b; ++n)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t xx = 0; xx < w; ++xx)
          d[((n * h + y) * w + xx) * c + ch] = s[((n * c + ch) * h + y) * w + xx];
  return out;
}

// Max |a-b| over the selected elements, relative to max(1, max |b|) (the values' scale).
struct Diff {
  double max_abs = 0, scale = 1;
  double relative() const { return max_abs / scale; }
};

inline void accumulate(Diff& d, double a, double b) {
  d.max_abs = std::max(d.max_abs, std::fabs(a - b));
  d.scale = std::max(d.scale, std::fabs(b));
}

inline int64_t count_valid(const int64_t* tokens, int64_t n, int64_t pad) {
  int64_t v = 0;
  while (v < n && tokens[v] != pad) ++v;
  return v;
}

inline std::vector<std::filesystem::path> parity_case_dirs(const std::filesystem::path& root) {
  std::vector<std::filesystem::path> dirs;
  if (std::filesystem::exists(root))
    for (const auto& e : std::filesystem::directory_iterator(root))
      if (e.is_directory() && std::filesystem::exists(e.path() / "io.safetensors"))
        dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

// Compares encoder output, full-sequence logits and incremental logits of one case.
inline void check_parity_case(ParityCase& c, double tolerance) {
  SCOPED_TRACE("case " + c.name);
  const ModelConfig& cfg = c.config;
  Tensor images = nchw_to_nhwc(c.io->get("patch_images"));
  Tensor src = c.io->get("src_tokens");
  Tensor prev = c.io->get("prev_output_tokens");
  EncoderOutput enc = c.model->encode(images, src);

  Tensor expected_enc = c.io->get("encoder_out");
  ASSERT_EQ(enc.states.shape(), expected_enc.shape());
  int64_t batch = enc.batch, s_len = enc.states.dim(1), d = cfg.d_model, l = src.dim(1);
  Diff enc_diff;
  for (int64_t b = 0; b < batch; ++b) {
    int64_t valid_text = count_valid(src.data<int64_t>() + b * l, l, cfg.pad_id);
    for (int64_t s = 0; s < enc.image_tokens + valid_text; ++s)
      for (int64_t e = 0; e < d; ++e) {
        int64_t i = (b * s_len + s) * d + e;
        accumulate(enc_diff, enc.states.data<float>()[i], expected_enc.data<float>()[i]);
      }
  }
  EXPECT_LE(enc_diff.relative(), tolerance) << "encoder_out max abs diff " << enc_diff.max_abs;

  Tensor ids = c.io->get("decoder_logits_ids");
  int64_t k = ids.dim(0), t = prev.dim(1), v = cfg.vocab_size;
  Tensor logits = c.model->decode_full(enc, prev);
  auto compare_logits = [&](const float* row, int64_t b, int64_t pos, const char* logits_name,
                            const char* lse_name, Diff& diff, Diff& lse_diff) {
    const float* want = c.io->get(logits_name).data<float>() + (b * t + pos) * k;
    for (int64_t j = 0; j < k; ++j) accumulate(diff, row[ids.data<int64_t>()[j]], want[j]);
    double m = *std::max_element(row, row + v), sum = 0;
    for (int64_t j = 0; j < v; ++j) sum += std::exp(static_cast<double>(row[j]) - m);
    accumulate(lse_diff, m + std::log(sum), c.io->get(lse_name).data<float>()[b * t + pos]);
  };
  Diff full, full_lse;
  for (int64_t b = 0; b < batch; ++b) {
    int64_t valid = count_valid(prev.data<int64_t>() + b * t, t, cfg.pad_id);
    for (int64_t pos = 0; pos < valid; ++pos)
      compare_logits(logits.data<float>() + (b * t + pos) * v, b, pos, "decoder_logits",
                     "decoder_logsumexp", full, full_lse);
  }
  EXPECT_LE(full.relative(), tolerance) << "decoder logits max abs diff " << full.max_abs;
  EXPECT_LE(full_lse.relative(), tolerance)
      << "decoder logsumexp max abs diff " << full_lse.max_abs;

  // Incremental decoding over the shortest common prefix of valid positions.
  int64_t steps = t;
  for (int64_t b = 0; b < batch; ++b)
    steps = std::min(steps, count_valid(prev.data<int64_t>() + b * t, t, cfg.pad_id));
  DecoderState st = c.model->start_decoding(enc, 1, t);
  Diff inc, inc_lse;
  for (int64_t pos = 0; pos < steps; ++pos) {
    std::vector<int64_t> tokens;
    for (int64_t b = 0; b < batch; ++b) tokens.push_back(prev.data<int64_t>()[b * t + pos]);
    Tensor step_logits = c.model->decode_step(st, tokens);
    for (int64_t b = 0; b < batch; ++b)
      compare_logits(step_logits.data<float>() + b * v, b, pos, "incremental_logits",
                     "incremental_logsumexp", inc, inc_lse);
  }
  EXPECT_GT(steps, 0);
  EXPECT_LE(inc.relative(), tolerance) << "incremental logits max abs diff " << inc.max_abs;
  EXPECT_LE(inc_lse.relative(), tolerance)
      << "incremental logsumexp max abs diff " << inc_lse.max_abs;
}

}  // namespace mue::testing
