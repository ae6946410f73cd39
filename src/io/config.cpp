#include "mue/config.h"

#include <fstream>

#include "mue/tensor.h"

namespace mue {
namespace {

template <typename T>
T get_field(const nlohmann::json& j, const char* key, const std::string& source, T fallback,
            bool required) {
  if (!j.contains(key)) {
    if (required) throw Error(source + ": missing field \"" + key + "\"");
    return fallback;
  }
  try {
    return j.at(key).get<T>();
  } catch (const std::exception& e) {
    throw Error(source + ": field \"" + key + "\" has the wrong type: " + e.what());
  }
}

void require_positive(int value, const char* key, const std::string& source) {
  if (value <= 0)
    throw Error(source + ": field \"" + key + "\" must be positive, got " + std::to_string(value));
}

}  // namespace

const char* encoder_mode_name(EncoderMode mode) {
  return mode == EncoderMode::kJoint ? "joint" : "decomposed";
}

ModelConfig ModelConfig::from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": config is not a JSON object");
  ModelConfig c;
  c.raw = j;
  std::string format = get_field<std::string>(j, "format", source, "mue-ofa", false);
  if (format != "mue-ofa") throw Error(source + ": format \"" + format + "\" is not \"mue-ofa\"");
  int version = get_field<int>(j, "format_version", source, 1, false);
  if (version != 1)
    throw Error(source + ": format_version " + std::to_string(version) + " is not supported (1)");
  c.name = get_field<std::string>(j, "name", source, "", false);
  c.d_model = get_field<int>(j, "d_model", source, 0, true);
  c.encoder_layers = get_field<int>(j, "encoder_layers", source, 0, true);
  c.decoder_layers = get_field<int>(j, "decoder_layers", source, 0, true);
  c.attention_heads = get_field<int>(j, "attention_heads", source, 0, true);
  c.ffn_dim = get_field<int>(j, "ffn_dim", source, 0, true);
  c.resnet_layers = get_field<std::vector<int>>(j, "resnet_layers", source, {}, true);
  c.resnet_width = get_field<int>(j, "resnet_width", source, 64, false);
  c.vocab_size = get_field<int>(j, "vocab_size", source, 0, true);
  c.max_source_positions = get_field<int>(j, "max_source_positions", source, 1024, false);
  c.max_target_positions = get_field<int>(j, "max_target_positions", source, 1024, false);
  c.token_bucket_size = get_field<int>(j, "token_bucket_size", source, 256, false);
  c.image_bucket_size = get_field<int>(j, "image_bucket_size", source, 42, false);
  c.attn_scale_factor = get_field<float>(j, "attn_scale_factor", source, 2.f, false);
  c.layer_norm_eps = get_field<float>(j, "layer_norm_eps", source, 1e-5f, false);
  std::string mode = get_field<std::string>(j, "encoder_mode", source, "decomposed", false);
  if (mode == "joint") {
    c.encoder_mode = EncoderMode::kJoint;
  } else if (mode == "decomposed") {
    c.encoder_mode = EncoderMode::kDecomposed;
  } else {
    throw Error(source + ": encoder_mode \"" + mode + "\" is neither \"joint\" nor \"decomposed\"");
  }
  if (j.contains("image_size")) {
    const auto& s = j["image_size"];
    if (s.is_number_integer()) {
      c.image_height = c.image_width = s.get<int>();
    } else if (s.is_array() && s.size() == 2 && s[0].is_number_integer() &&
               s[1].is_number_integer()) {
      c.image_height = s[0].get<int>();
      c.image_width = s[1].get<int>();
    } else {
      throw Error(source + ": image_size must be an integer or [height, width]");
    }
  }
  c.image_mean = get_field<std::array<float, 3>>(j, "image_mean", source, c.image_mean, false);
  c.image_std = get_field<std::array<float, 3>>(j, "image_std", source, c.image_std, false);
  c.bos_id = get_field<int>(j, "bos_id", source, 0, false);
  c.pad_id = get_field<int>(j, "pad_id", source, 1, false);
  c.eos_id = get_field<int>(j, "eos_id", source, 2, false);
  c.unk_id = get_field<int>(j, "unk_id", source, 3, false);

  require_positive(c.d_model, "d_model", source);
  require_positive(c.encoder_layers, "encoder_layers", source);
  require_positive(c.decoder_layers, "decoder_layers", source);
  require_positive(c.attention_heads, "attention_heads", source);
  require_positive(c.ffn_dim, "ffn_dim", source);
  require_positive(c.resnet_width, "resnet_width", source);
  require_positive(c.vocab_size, "vocab_size", source);
  require_positive(c.token_bucket_size, "token_bucket_size", source);
  require_positive(c.image_bucket_size, "image_bucket_size", source);
  require_positive(c.image_height, "image_size", source);
  require_positive(c.image_width, "image_size", source);
  if (c.d_model % c.attention_heads != 0)
    throw Error(source + ": d_model " + std::to_string(c.d_model) +
                " is not divisible by attention_heads " + std::to_string(c.attention_heads));
  if (c.resnet_layers.size() != 3)
    throw Error(source + ": resnet_layers must list the blocks of 3 stages");
  for (int b : c.resnet_layers) require_positive(b, "resnet_layers", source);
  if (c.image_height % 16 || c.image_width % 16)
    throw Error(source + ": image_size must be a multiple of 16 (the ResNet stride)");
  if (c.image_height / 16 > c.image_bucket_size || c.image_width / 16 > c.image_bucket_size)
    throw Error(source + ": image grid " + std::to_string(c.image_height / 16) + "x" +
                std::to_string(c.image_width / 16) + " exceeds image_bucket_size " +
                std::to_string(c.image_bucket_size));
  for (float s : c.image_std)
    if (!(s > 0)) throw Error(source + ": image_std entries must be positive");
  return c;
}

ModelConfig ModelConfig::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("model config " + path + ": cannot open");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw Error("model config " + path + ": not valid JSON: " + e.what());
  }
  return from_json(j, "model config " + path);
}

}  // namespace mue
