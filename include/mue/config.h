// The model's config.json (models/FORMAT.md): sizes, preprocessing, special ids.
#pragma once

#include <array>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mue {

enum class EncoderMode { kJoint, kDecomposed };

// The tokenizer's files, relative to the model directory ("tokenizer" in config.json).
struct TokenizerFiles {
  std::string encoder_json = "encoder.json", vocab_bpe = "vocab.bpe", dict = "dict.txt";
  bool ofa_extra_tokens = true;  // the <code_*> and <bin_*> ids after the BPE vocabulary
};

// "tasks.caption": the prompt and the generation defaults (OFA's, spec 2.2).
struct CaptionTaskConfig {
  std::string prompt = " what does the image describe?";
  int beam_size = 5, max_len = 16, min_len = 1, no_repeat_ngram_size = 3;
  double length_penalty = 1.0;
};

// "tasks.entailment": prompts with {premise} and {hypothesis}, and the one-token answers in the
// order entailment, neutral, contradiction (spec 2.1).
struct EntailmentTaskConfig {
  std::string prompt = " can image and text1 \" {premise} \" imply text2 \" {hypothesis} \"?";
  std::string prompt_without_premise = " does the image describe \" {hypothesis} \"?";
  std::array<std::string, 3> answers{" yes", " maybe", " no"};
};

struct ModelConfig {
  std::string name;
  int d_model = 0;
  int encoder_layers = 0;
  int decoder_layers = 0;
  int attention_heads = 0;
  int ffn_dim = 0;
  std::vector<int> resnet_layers;
  int resnet_width = 64;
  int vocab_size = 0;
  int max_source_positions = 1024;
  int max_target_positions = 1024;
  int token_bucket_size = 256;
  int image_bucket_size = 42;
  float attn_scale_factor = 2.f;
  float layer_norm_eps = 1e-5f;
  EncoderMode encoder_mode = EncoderMode::kDecomposed;
  int image_height = 480;
  int image_width = 480;
  std::array<float, 3> image_mean{0.5f, 0.5f, 0.5f};
  std::array<float, 3> image_std{0.5f, 0.5f, 0.5f};
  int bos_id = 0, pad_id = 1, eos_id = 2, unk_id = 3;
  bool normformer = true;  // NormFormer's extra LayerNorms and head scales (spec 3.5)
  TokenizerFiles tokenizer;
  CaptionTaskConfig caption;
  EntailmentTaskConfig entailment;

  int head_dim() const { return d_model / attention_heads; }
  int image_feature_channels() const { return 16 * resnet_width; }

  // Parses and validates; errors name `source` and the field.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  static ModelConfig load(const std::string& path);
};

const char* encoder_mode_name(EncoderMode mode);

}  // namespace mue
