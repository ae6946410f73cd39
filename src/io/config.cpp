#include "mue/config.h"

#include <cfloat>
#include <climits>
#include <cstdint>
#include <fstream>
#include <set>

#include "mue/tensor.h"

namespace mue {
namespace {

using nlohmann::json;

// `value` as an int in [min, max]. Only a JSON integer is one: get<int> would truncate 192.9,
// wrap 4294967302 to 6 and take 1e10 (a float) out of int's range, which is undefined.
int to_int(const json& value, const std::string& what, int64_t min, int64_t max) {
  if (!value.is_number())
    throw Error(what + " has the wrong type: expected an integer, got " + value.type_name());
  if (!value.is_number_integer()) throw Error(what + " must be an integer, got " + value.dump());
  const bool beyond_int64 = value.is_number_unsigned() && value.get<uint64_t>() > INT64_MAX;
  const int64_t v = beyond_int64 ? 0 : value.get<int64_t>();
  if (beyond_int64 || v < min || v > max)
    throw Error(what + " must be an integer from " + std::to_string(min) + " to " +
                std::to_string(max) + ", got " + value.dump());
  return static_cast<int>(v);
}

// `value` as a float; a double beyond float's range would be undefined to convert.
float to_float(const json& value, const std::string& what) {
  if (!value.is_number())
    throw Error(what + " has the wrong type: expected a number, got " + value.type_name());
  const double v = value.get<double>();
  if (!(v >= -FLT_MAX && v <= FLT_MAX))
    throw Error(what + " is beyond the range of float: " + value.dump());
  return static_cast<float>(v);
}

// One JSON object of the config. Fields are read by name; the fields that nothing read are
// refused at the end, so that a misspelt field is an error rather than a silent default.
class Fields {
 public:
  // `path` names a nested object ("tasks.caption"); empty for the top level.
  Fields(const json& j, const std::string& source, std::string path = "")
      : j_(j),
        source_(source),
        path_(std::move(path)),
        where_(path_.empty() ? source : source + ": " + path_) {}

  std::string what(const char* key) const { return where_ + ": field \"" + key + "\""; }

  // The field's value, or null when absent (an error when required).
  const json* find(const char* key, bool required = false) {
    read_.insert(key);
    auto it = j_.find(key);
    if (it != j_.end()) return &*it;
    if (required) throw Error(where_ + ": missing field \"" + key + "\"");
    return nullptr;
  }

  // A string, bool or double field.
  template <typename T>
  T get(const char* key, T fallback, bool required = false) {
    const json* value = find(key, required);
    if (!value) return fallback;
    try {
      return value->get<T>();
    } catch (const json::exception& e) {
      throw Error(what(key) + " has the wrong type: " + e.what());
    }
  }

  int get_int(const char* key, int fallback, int64_t min, int64_t max = INT_MAX,
              bool required = false) {
    const json* value = find(key, required);
    return value ? to_int(*value, what(key), min, max) : fallback;
  }

  float get_float(const char* key, float fallback) {
    const json* value = find(key);
    return value ? to_float(*value, what(key)) : fallback;
  }

  template <size_t N>
  std::array<float, N> get_floats(const char* key, std::array<float, N> fallback) {
    const json* value = find(key);
    if (!value) return fallback;
    if (!value->is_array() || value->size() != N)
      throw Error(what(key) + " must be a list of " + std::to_string(N) + " numbers");
    std::array<float, N> out;
    for (size_t i = 0; i < N; ++i)
      out[i] = to_float((*value)[i], what(key) + "[" + std::to_string(i) + "]");
    return out;
  }

  // A nested object (absent: empty), read with its own Fields.
  Fields section(const char* key) {
    static const json empty = json::object();
    const json* value = find(key);
    if (value && !value->is_object()) throw Error(what(key) + " must be an object");
    return Fields(value ? *value : empty, source_, path_.empty() ? key : path_ + "." + key);
  }

  void refuse_unknown() const {
    for (auto it = j_.begin(); it != j_.end(); ++it)
      if (!read_.count(it.key()))
        throw Error(where_ + ": unknown field \"" + it.key() +
                    "\" (models/FORMAT.md lists the fields)");
  }

 private:
  const json& j_;
  std::string source_, path_, where_;
  std::set<std::string> read_;
};

// The task-level sections: tokenizer files, prompts, answers, generation defaults.
void read_sections(Fields& top, ModelConfig& c) {
  Fields tok = top.section("tokenizer");
  TokenizerFiles& t = c.tokenizer;
  t.encoder_json = tok.get<std::string>("encoder_json", t.encoder_json);
  t.vocab_bpe = tok.get<std::string>("vocab_bpe", t.vocab_bpe);
  t.dict = tok.get<std::string>("dict", t.dict);
  t.ofa_extra_tokens = tok.get<bool>("ofa_extra_tokens", t.ofa_extra_tokens);
  tok.refuse_unknown();

  Fields tasks = top.section("tasks");
  Fields cap = tasks.section("caption");
  CaptionTaskConfig& k = c.caption;
  k.prompt = cap.get<std::string>("prompt", k.prompt);
  // The ranges of GenerationSettings::validate().
  k.beam_size = cap.get_int("beam_size", k.beam_size, 1);
  k.max_len = cap.get_int("max_len", k.max_len, 1);
  k.min_len = cap.get_int("min_len", k.min_len, 0, k.max_len);
  k.no_repeat_ngram_size = cap.get_int("no_repeat_ngram_size", k.no_repeat_ngram_size, 0);
  k.length_penalty = cap.get<double>("length_penalty", k.length_penalty);
  cap.refuse_unknown();

  Fields ve = tasks.section("entailment");
  EntailmentTaskConfig& e = c.entailment;
  e.prompt = ve.get<std::string>("prompt", e.prompt);
  e.prompt_without_premise =
      ve.get<std::string>("prompt_without_premise", e.prompt_without_premise);
  Fields answers = ve.section("answers");
  const char* labels[3] = {"entailment", "neutral", "contradiction"};
  for (int i = 0; i < 3; ++i) e.answers[i] = answers.get<std::string>(labels[i], e.answers[i]);
  answers.refuse_unknown();
  ve.refuse_unknown();
  tasks.refuse_unknown();
}

}  // namespace

const char* encoder_mode_name(EncoderMode mode) {
  return mode == EncoderMode::kJoint ? "joint" : "decomposed";
}

ModelConfig ModelConfig::from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": config is not a JSON object");
  Fields f(j, source);
  ModelConfig c;
  std::string format = f.get<std::string>("format", "mue-ofa");
  if (format != "mue-ofa") throw Error(source + ": format \"" + format + "\" is not \"mue-ofa\"");
  int version = f.get_int("format_version", 1, INT_MIN);
  if (version != 1)
    throw Error(source + ": format_version " + std::to_string(version) + " is not supported (1)");
  c.name = f.get<std::string>("name", "");
  // Sizes and counts: positive ints (the model multiplies them; none may be 0).
  const bool required = true;
  c.d_model = f.get_int("d_model", 0, 1, INT_MAX, required);
  c.encoder_layers = f.get_int("encoder_layers", 0, 1, INT_MAX, required);
  c.decoder_layers = f.get_int("decoder_layers", 0, 1, INT_MAX, required);
  c.attention_heads = f.get_int("attention_heads", 0, 1, INT_MAX, required);
  c.ffn_dim = f.get_int("ffn_dim", 0, 1, INT_MAX, required);
  const json& blocks = *f.find("resnet_layers", required);
  if (!blocks.is_array() || blocks.size() != 3)
    throw Error(source + ": resnet_layers must list the blocks of 3 stages");
  for (size_t i = 0; i < blocks.size(); ++i)
    c.resnet_layers.push_back(
        to_int(blocks[i], f.what("resnet_layers") + "[" + std::to_string(i) + "]", 1, INT_MAX));
  c.resnet_width = f.get_int("resnet_width", 64, 1);
  c.vocab_size = f.get_int("vocab_size", 0, 1, INT_MAX, required);
  c.max_source_positions = f.get_int("max_source_positions", 1024, 1);
  c.max_target_positions = f.get_int("max_target_positions", 1024, 1);
  c.token_bucket_size = f.get_int("token_bucket_size", 256, 1);
  c.image_bucket_size = f.get_int("image_bucket_size", 42, 1);
  c.attn_scale_factor = f.get_float("attn_scale_factor", 2.f);
  c.layer_norm_eps = f.get_float("layer_norm_eps", 1e-5f);
  std::string mode = f.get<std::string>("encoder_mode", "decomposed");
  if (mode == "joint") {
    c.encoder_mode = EncoderMode::kJoint;
  } else if (mode == "decomposed") {
    c.encoder_mode = EncoderMode::kDecomposed;
  } else {
    throw Error(source + ": encoder_mode \"" + mode + "\" is neither \"joint\" nor \"decomposed\"");
  }
  if (const json* s = f.find("image_size")) {
    if (s->is_number()) {
      c.image_height = c.image_width = to_int(*s, f.what("image_size"), 1, INT_MAX);
    } else if (s->is_array() && s->size() == 2) {
      c.image_height = to_int((*s)[0], f.what("image_size") + "[0]", 1, INT_MAX);
      c.image_width = to_int((*s)[1], f.what("image_size") + "[1]", 1, INT_MAX);
    } else {
      throw Error(source + ": image_size must be an integer or [height, width]");
    }
  }
  c.image_mean = f.get_floats("image_mean", c.image_mean);
  c.image_std = f.get_floats("image_std", c.image_std);
  // Special ids index the vocabulary.
  c.bos_id = f.get_int("bos_id", 0, 0, c.vocab_size - 1);
  c.pad_id = f.get_int("pad_id", 1, 0, c.vocab_size - 1);
  c.eos_id = f.get_int("eos_id", 2, 0, c.vocab_size - 1);
  c.unk_id = f.get_int("unk_id", 3, 0, c.vocab_size - 1);

  c.normformer = f.get<bool>("normformer", true);
  read_sections(f, c);
  f.refuse_unknown();

  if (c.d_model % c.attention_heads != 0)
    throw Error(source + ": d_model " + std::to_string(c.d_model) +
                " is not divisible by attention_heads " + std::to_string(c.attention_heads));
  if (!(c.attn_scale_factor > 0))
    throw Error(source + ": field \"attn_scale_factor\" must be positive");
  if (!(c.layer_norm_eps > 0)) throw Error(source + ": field \"layer_norm_eps\" must be positive");
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
