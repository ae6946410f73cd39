#include <gtest/gtest.h>

#include <filesystem>

#include "mue/config.h"
#include "mue/tensor.h"

namespace mue {
namespace {

nlohmann::json base() {
  return {{"format", "mue-ofa"},        {"d_model", 256},       {"encoder_layers", 4},
          {"decoder_layers", 4},        {"attention_heads", 4}, {"ffn_dim", 1024},
          {"resnet_layers", {3, 4, 6}}, {"vocab_size", 59457},  {"image_size", 480}};
}

std::string error_of(const nlohmann::json& j) {
  try {
    ModelConfig::from_json(j, "cfg");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ModelConfig, ParsesDefaultsOfOfa) {
  ModelConfig c = ModelConfig::from_json(base(), "cfg");
  EXPECT_EQ(c.head_dim(), 64);
  EXPECT_EQ(c.image_feature_channels(), 1024);
  EXPECT_EQ(c.encoder_mode, EncoderMode::kDecomposed);
  EXPECT_EQ(c.image_height, 480);
  EXPECT_EQ(c.image_bucket_size, 42);
  EXPECT_FLOAT_EQ(c.image_mean[0], 0.5f);
}

TEST(ModelConfig, BadFieldsAreNamed) {
  auto j = base();
  j.erase("d_model");
  EXPECT_NE(error_of(j).find("missing field \"d_model\""), std::string::npos);
  j = base();
  j["attention_heads"] = 3;
  EXPECT_NE(error_of(j).find("not divisible"), std::string::npos);
  j = base();
  j["encoder_mode"] = "fused";
  EXPECT_NE(error_of(j).find("encoder_mode"), std::string::npos);
  j = base();
  j["image_size"] = 1024;  // 64x64 grid > 42 buckets
  EXPECT_NE(error_of(j).find("image_bucket_size"), std::string::npos);
  j = base();
  j["ffn_dim"] = "big";
  EXPECT_NE(error_of(j).find("\"ffn_dim\" has the wrong type"), std::string::npos);
  EXPECT_THROW(ModelConfig::load("/nonexistent/config.json"), Error);
}

bool has(const std::string& text, const std::string& fragment) {
  return text.find(fragment) != std::string::npos;
}

// issue 18: get<int> truncated floats, wrapped big integers and took 1e10 out of int's range (UB).
TEST(ModelConfig, CountsAndIdsMustBeIntegersInRange) {
  auto j = base();
  j["d_model"] = 192.9;
  std::string e = error_of(j);
  EXPECT_TRUE(has(e, "field \"d_model\" must be an integer, got 192.9")) << e;
  j = base();
  j["encoder_layers"] = 4294967302u;  // 2^32 + 6: loaded as 6
  e = error_of(j);
  EXPECT_TRUE(has(e, "field \"encoder_layers\" must be an integer from 1 to 2147483647")) << e;
  EXPECT_TRUE(has(e, "4294967302")) << e;
  j = base();
  j["format_version"] = 1e10;
  e = error_of(j);
  EXPECT_TRUE(has(e, "field \"format_version\" must be an integer")) << e;
  j = base();
  j["format_version"] = 2;
  EXPECT_TRUE(has(error_of(j), "format_version 2 is not supported")) << error_of(j);
  j = base();
  j["vocab_size"] = 18446744073709551615ull;  // beyond int64 too
  EXPECT_TRUE(has(error_of(j), "field \"vocab_size\" must be an integer from 1")) << error_of(j);
  j = base();
  j["decoder_layers"] = 0;
  EXPECT_TRUE(has(error_of(j), "field \"decoder_layers\" must be an integer from 1"))
      << error_of(j);
  j = base();
  j["max_source_positions"] = -5;
  EXPECT_TRUE(has(error_of(j), "field \"max_source_positions\" must be an integer from 1"))
      << error_of(j);
  j = base();
  j["resnet_layers"] = {3, 4.5, 6};
  EXPECT_TRUE(has(error_of(j), "field \"resnet_layers\"[1] must be an integer, got 4.5"))
      << error_of(j);
  j = base();
  j["image_size"] = {480, 4294967776u};
  EXPECT_TRUE(has(error_of(j), "field \"image_size\"[1] must be an integer from 1")) << error_of(j);
  j = base();
  j["image_size"] = 480.0;
  EXPECT_TRUE(has(error_of(j), "field \"image_size\" must be an integer")) << error_of(j);
  // Special ids index the vocabulary.
  j = base();
  j["pad_id"] = 59457;
  EXPECT_TRUE(has(error_of(j), "field \"pad_id\" must be an integer from 0 to 59456, got 59457"))
      << error_of(j);
  j = base();
  j["eos_id"] = "2";
  EXPECT_TRUE(has(error_of(j), "field \"eos_id\" has the wrong type")) << error_of(j);
  // Floats beyond float's range were undefined to convert too.
  j = base();
  j["layer_norm_eps"] = 1e300;
  EXPECT_TRUE(has(error_of(j), "field \"layer_norm_eps\" is beyond the range of float"))
      << error_of(j);
  j = base();
  j["image_mean"] = {0.5, 1e40, 0.5};
  EXPECT_TRUE(has(error_of(j), "field \"image_mean\"[1] is beyond the range of float"))
      << error_of(j);
}

TEST(ModelConfig, SectionIntegersAreStrictAndNamed) {
  auto j = base();
  j["tasks"] = {{"caption", {{"beam_size", 5.5}}}};
  EXPECT_TRUE(
      has(error_of(j), "cfg: tasks.caption: field \"beam_size\" must be an integer, got 5.5"))
      << error_of(j);
  j["tasks"] = {{"caption", {{"max_len", 4294967312u}}}};
  EXPECT_TRUE(has(error_of(j), "tasks.caption: field \"max_len\" must be an integer from 1"))
      << error_of(j);
  j["tasks"] = {{"caption", {{"max_len", 10}, {"min_len", 11}}}};
  EXPECT_TRUE(has(error_of(j), "tasks.caption: field \"min_len\" must be an integer from 0 to 10"))
      << error_of(j);
  j["tasks"] = {{"caption", {{"no_repeat_ngram_size", -1}}}};
  EXPECT_TRUE(has(error_of(j), "field \"no_repeat_ngram_size\" must be an integer from 0"))
      << error_of(j);
  j["tasks"] = {{"caption", {{"beam_size", 3}, {"max_len", 20}, {"min_len", 2}}},
                {"entailment", {{"answers", {{"neutral", " perhaps"}}}}}};
  j["tokenizer"] = {{"ofa_extra_tokens", false}};
  ModelConfig c = ModelConfig::from_json(j, "cfg");
  EXPECT_EQ(c.caption.beam_size, 3);
  EXPECT_EQ(c.caption.max_len, 20);
  EXPECT_EQ(c.caption.min_len, 2);
  EXPECT_EQ(c.entailment.answers[1], " perhaps");
  EXPECT_EQ(c.entailment.answers[0], " yes");
  EXPECT_FALSE(c.tokenizer.ofa_extra_tokens);
}

// Every field the shipped models and the tools write is read, so a field the engine does not know
// is a mistake (a misspelling would silently keep the default).
TEST(ModelConfig, UnknownFieldsAreRefusedByName) {
  auto j = base();
  j["encoder_layer"] = 4;
  EXPECT_TRUE(has(error_of(j), "cfg: unknown field \"encoder_layer\"")) << error_of(j);
  j = base();
  j["tokenizer"] = {{"vocab", "vocab.bpe"}};
  EXPECT_TRUE(has(error_of(j), "cfg: tokenizer: unknown field \"vocab\"")) << error_of(j);
  j = base();
  j["tasks"] = {{"caption", {{"beam", 3}}}};
  EXPECT_TRUE(has(error_of(j), "cfg: tasks.caption: unknown field \"beam\"")) << error_of(j);
  j = base();
  j["tasks"] = {{"grounding", nlohmann::json::object()}};
  EXPECT_TRUE(has(error_of(j), "cfg: tasks: unknown field \"grounding\"")) << error_of(j);
  j = base();
  j["tasks"] = {{"entailment", {{"answers", {{"yes", " yes"}}}}}};
  EXPECT_TRUE(has(error_of(j), "cfg: tasks.entailment.answers: unknown field \"yes\""))
      << error_of(j);
}

TEST(ModelConfig, ShippedAndFixtureConfigsLoad) {
  namespace fs = std::filesystem;
  std::vector<fs::path> configs;
  for (const char* dir : {"models", "tests/fixtures"})
    for (const auto& entry : fs::recursive_directory_iterator(fs::path(MUE_SOURCE_DIR) / dir))
      if (entry.path().filename() == "config.json") configs.push_back(entry.path());
  EXPECT_GE(configs.size(), 2u);
  for (const fs::path& path : configs) EXPECT_NO_THROW(ModelConfig::load(path.string())) << path;
}

}  // namespace
}  // namespace mue
