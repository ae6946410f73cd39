#include <gtest/gtest.h>

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

}  // namespace
}  // namespace mue
