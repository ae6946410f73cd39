// The table of bad inputs (README, "Errors"): for each loader and each way its input can be
// wrong, the refusal is a mue::Error whose message names the thing (file, tensor, field, flag,
// line) and the reason. Dumps count their bad lines instead, keeping the good ones.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "io/dump.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "mue/config.h"
#include "mue/mue.h"
#include "python_tool.h"

namespace mue::testing {
namespace {

namespace fs = std::filesystem;
const fs::path kModel = fs::path(MUE_SOURCE_DIR) / "models" / "mue-scenes-small";

struct BadInput {
  std::string what;                // the row of the table
  std::function<void()> load;      // must throw mue::Error
  std::vector<std::string> named;  // substrings the message must contain
};

void expect_refusals(const std::vector<BadInput>& table) {
  for (const BadInput& row : table) {
    SCOPED_TRACE(row.what);
    try {
      row.load();
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      for (const std::string& part : row.named)
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
            << "\"" << part << "\" not in: " << e.what();
    }
  }
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A safetensors file: 8-byte little-endian header length, the JSON header, the data.
fs::path safetensors_file(const fs::path& dir, const std::string& name, const std::string& header,
                          size_t data_bytes, uint64_t header_length = 0) {
  fs::path path = dir / name;
  std::ofstream out(path, std::ios::binary);
  uint64_t n = header_length ? header_length : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << std::string(data_bytes, '\0');
  return path;
}

class BadInputs : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = fresh_temp_dir("bad_inputs"); }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(BadInputs, SafetensorsFiles) {
  auto open = [](const fs::path& p) { return [p] { SafeTensorsFile::open(p.string()); }; };
  fs::path truncated = dir_ / "truncated.safetensors";
  std::ofstream(truncated, std::ios::binary) << "abc";
  const std::string f32_a = R"("a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]})";
  expect_refusals({
      {"truncated before the header length", open(truncated), {"truncated.safetensors"}},
      {"header length beyond the file",
       open(safetensors_file(dir_, "long.safetensors", "{}", 0, 4096)),
       {"long.safetensors", "header"}},
      {"malformed header JSON",
       open(safetensors_file(dir_, "json.safetensors", "{not json", 0)),
       {"json.safetensors"}},
      {"overlapping tensors",
       open(safetensors_file(
           dir_, "overlap.safetensors",
           "{" + f32_a + R"(, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12)),
       {"overlap.safetensors", "overlaps"}},
      {"data beyond the file",
       open(safetensors_file(dir_, "oob.safetensors", "{" + f32_a + "}", 4)),
       {"oob.safetensors", "\"a\""}},
      {"unsupported dtype",
       open(safetensors_file(dir_, "dtype.safetensors",
                             R"({"c": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}})",
                             8)),
       {"dtype.safetensors", "\"c\"", "C64"}},
  });
  // Shapes and names are checked where the model asks for its tensors, all at once.
  fs::path good = safetensors_file(dir_, "good.safetensors", "{" + f32_a + "}", 8);
  WeightStore store(SafeTensorsFile::open(good.string()));
  store.get("a", {3});
  store.get("encoder.missing.weight", {4, 4});
  expect_refusals({{"a wrong shape and a missing tensor, together",
                    [&] { store.check(); },
                    {"good.safetensors", "a", "[3]", "encoder.missing.weight"}}});
}

TEST_F(BadInputs, ConfigFields) {
  nlohmann::json good;
  std::ifstream(kModel / "config.json") >> good;
  ASSERT_NO_THROW(ModelConfig::from_json(good, "cfg"));
  auto with = [&](const std::function<void(nlohmann::json&)>& change) {
    nlohmann::json j = good;
    change(j);
    return [j] { ModelConfig::from_json(j, "cfg"); };
  };
  expect_refusals({
      {"missing field", with([](auto& j) { j.erase("d_model"); }), {"cfg", "d_model"}},
      {"unknown field", with([](auto& j) { j["frobnicate"] = 1; }), {"cfg", "frobnicate"}},
      {"count out of range",
       with([](auto& j) { j["encoder_layers"] = 0; }),
       {"cfg", "encoder_layers"}},
      {"count not an integer", with([](auto& j) { j["d_model"] = 192.9; }), {"d_model", "192.9"}},
      {"nested field out of range",
       with([](auto& j) { j["tasks"]["caption"]["beam_size"] = 0; }),
       {"tasks.caption", "beam_size"}},
  });
}

TEST_F(BadInputs, Images) {
  const std::string png = read_bytes(kModel / "example.png");
  ASSERT_GT(png.size(), 100u);
  auto decode = [](std::string bytes, std::string name, int64_t max_pixels = int64_t{1} << 26) {
    return [bytes, name, max_pixels] {
      decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name, max_pixels);
    };
  };
  expect_refusals({
      {"corrupt", decode("hello, not an image", "junk.png"), {"junk.png"}},
      {"truncated", decode(png.substr(0, png.size() / 2), "half.png"), {"half.png"}},
      {"empty", decode("", "empty.jpg"), {"empty.jpg"}},
      {"over the pixel limit", decode(png, "big.png", 100), {"big.png", "pixels"}},
      {"unsupported format",
       decode("GIF89a\x01\x00\x01\x00\x00\x00\x00;", "anim.gif"),
       {"anim.gif"}},
      {"missing file",
       [] { decode_image_file("/nonexistent/scene.png"); },
       {"/nonexistent/scene.png"}},
  });
}

TEST_F(BadInputs, TextSettingsAndOptions) {
  EngineOptions one_thread;
  one_thread.threads = 1;
  auto engine = Engine::load(kModel.string(), one_thread);
  const PreparedImage image = engine->prepare_image((kModel / "example.png").string());
  std::string long_text;
  for (int i = 0; i < 80; ++i) long_text += "antidisestablishmentarianism ";
  ExitPolicy threshold, depth;
  threshold.exit_threshold_image = 1.5;
  depth.fixed_depth_decoder = 99;
  CallOptions no_beams;
  no_beams.generation = engine->default_generation();
  no_beams.generation->beam_size = 0;
  EngineOptions negative;
  negative.threads = -3;
  expect_refusals({
      {"empty hypothesis", [&] { engine->entail(image, "", ""); }, {"hypothesis is empty"}},
      {"hypothesis empty after cleaning",
       [&] { engine->entail(image, "", "?!"); },
       {"after OFA's text cleaning", "\"?!\""}},
      {"over-long prompt",
       [&] { engine->entail(image, long_text, long_text); },
       {"prompt is", "more than the model's 256"}},
      {"threshold out of range",
       [&] { engine->check_exit_policy(threshold); },
       {"exit_threshold_image", "outside (0, 1]"}},
      {"fixed depth beyond the model",
       [&] { engine->check_exit_policy(depth); },
       {"fixed_depth_decoder = 99", "6 decoder layers"}},
      {"beam size 0", [&] { engine->caption(image, no_beams); }, {"beam_size", "at least 1"}},
      {"negative thread count", [&] { Engine::load(kModel.string(), negative); }, {"threads = -3"}},
  });
  // Invalid UTF-8 is no error: the tokenizer maps bad bytes as GPT-2's does, and an answer comes.
  const EntailmentResult r = engine->entail(image, "", "there is a \xff\xfe red item");
  EXPECT_NEAR(r.p_entailment + r.p_neutral + r.p_contradiction, 1.0, 1e-6);
}

TEST_F(BadInputs, DumpLinesAreCountedNeverDropped) {
  fs::create_directories(dir_ / "images");
  fs::copy_file(kModel / "example.png", dir_ / "images/a.png");
  std::ofstream(dir_ / "manifest.jsonl")
      << R"({"id": "good", "image": "images/a.png", "hypothesis": "a red item", "label": "entailment"})"
      << "\n"
      << R"({"id": "gone", "image": "images/missing.png", "hypothesis": "x", "label": "neutral"})"
      << "\n"
      << "this is not json\n"
      << R"({"id": "odd", "image": "images/a.png", "hypothesis": "x", "label": "maybe"})"
      << "\n";
  auto dump = read_ve_dump(dir_, OnBadLine::kCollect);
  ASSERT_EQ(dump.samples.size(), 1u);
  EXPECT_EQ(dump.samples[0].id, "good");
  ASSERT_EQ(dump.bad_lines.size(), 3u);
  EXPECT_EQ(dump.bad_lines[0].kind, BadLineKind::kMissingImage);
  EXPECT_EQ(dump.bad_lines[1].kind, BadLineKind::kBadJson);
  EXPECT_EQ(dump.bad_lines[2].kind, BadLineKind::kUnknownLabel);
  for (int i = 0; i < 3; ++i)
    EXPECT_NE(dump.bad_lines[i].message.find("manifest.jsonl:" + std::to_string(i + 2) + ":"),
              std::string::npos)
        << dump.bad_lines[i].message;
}

}  // namespace
}  // namespace mue::testing
