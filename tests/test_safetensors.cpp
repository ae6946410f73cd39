#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/safetensors.h"

namespace mue {
namespace {

std::string tmp(const std::string& name) {
  auto dir = std::filesystem::path(MUE_BINARY_DIR) / "safetensors_test";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

void write_raw(const std::string& path, const std::string& header, size_t data_bytes) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header;
  std::string data(data_bytes, '\0');
  out << data;
}

std::string error_of(const std::string& path) {
  try {
    SafeTensorsFile::open(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(SafeTensors, RoundTripIsAZeroCopyView) {
  Tensor a = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::empty({3}, DType::kI64);
  for (int i = 0; i < 3; ++i) b.data<int64_t>()[i] = 10 + i;
  std::string path = tmp("roundtrip.safetensors");
  write_safetensors(path, {{"a", a}, {"b", b}});
  auto file = SafeTensorsFile::open(path);
  Tensor ra = file->get("a");
  EXPECT_EQ(ra.shape(), (Shape{2, 3}));
  EXPECT_EQ(ra.data<float>()[5], 6.f);
  EXPECT_EQ(file->get("b").data<int64_t>()[2], 12);
  EXPECT_EQ(ra.owner().get(), file.get()) << "views keep the mapping alive";
  file.reset();
  EXPECT_EQ(ra.data<float>()[0], 1.f);
}

TEST(SafeTensors, HalfConversionKnownValues) {
  EXPECT_EQ(half_to_float(0x3c00), 1.f);
  EXPECT_EQ(half_to_float(0xc000), -2.f);
  EXPECT_EQ(half_to_float(0x7bff), 65504.f);
  EXPECT_FLOAT_EQ(half_to_float(0x0001), 5.9604645e-8f);
  for (float f : {0.f, 1.f, -3.5f, 0.333251953125f, 65504.f})
    EXPECT_EQ(half_to_float(float_to_half(f)), f);
}

TEST(SafeTensors, BadFilesAreRefusedWithTheReason) {
  EXPECT_NE(error_of(tmp("does-not-exist")).find("cannot open"), std::string::npos);
  std::string short_file = tmp("short.safetensors");
  std::ofstream(short_file) << "abc";
  EXPECT_NE(error_of(short_file).find("too short"), std::string::npos);

  std::string huge = tmp("huge_header.safetensors");
  {
    std::ofstream out(huge, std::ios::binary);
    uint64_t n = 1 << 30;
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << "{}";
  }
  EXPECT_NE(error_of(huge).find("exceeds the file size"), std::string::npos);

  std::string bad_json = tmp("bad_json.safetensors");
  write_raw(bad_json, "{not json", 0);
  EXPECT_NE(error_of(bad_json).find("not valid JSON"), std::string::npos);

  std::string truncated = tmp("truncated.safetensors");
  write_raw(truncated, R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
  std::string msg = error_of(truncated);
  EXPECT_NE(msg.find("\"w\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;

  std::string mismatch = tmp("mismatch.safetensors");
  write_raw(mismatch, R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16);
  EXPECT_NE(error_of(mismatch).find("needs 12 bytes"), std::string::npos);

  std::string dtype = tmp("dtype.safetensors");
  write_raw(dtype, R"({"w":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})", 16);
  EXPECT_NE(error_of(dtype).find("unsupported dtype"), std::string::npos);
}

}  // namespace
}  // namespace mue
