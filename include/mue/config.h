// The model's config.json (models/FORMAT.md): sizes, preprocessing, special ids.
#pragma once

#include <array>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mue {

enum class EncoderMode { kJoint, kDecomposed };

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
  nlohmann::json raw;  // the whole file, for task-level settings (prompts, tokenizer)

  int head_dim() const { return d_model / attention_heads; }
  int image_feature_channels() const { return 16 * resnet_width; }

  // Parses and validates; errors name `source` and the field.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  static ModelConfig load(const std::string& path);
};

const char* encoder_mode_name(EncoderMode mode);

}  // namespace mue
