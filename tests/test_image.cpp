// Image decoding and PIL bicubic resizing (spec 3.8) against Pillow itself:
// tools/pil_reference.py writes what `Image.open(p).convert("RGB")` and `.resize(size,
// Image.BICUBIC)` give, and every image here is decoded and resized by mue and compared.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "io/image.h"

namespace mue {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kSourceDir = MUE_SOURCE_DIR;
const std::string kBinaryDir = MUE_BINARY_DIR;
const std::string kCocoDir = kSourceDir + "/../shared/real/coco-val2017-mini/val2017";
constexpr int kMaxAbsDiff = 2;  // out of 255: the brief's tolerance for PIL agreement

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(file), {});
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

// A PIL reference image: raw HWC uint8 written by pil_reference.py; the file is removed once
// read, so the 159 photos never sit in the build tree together.
RgbImage load_reference(const json& entry, const std::string& raw_key = "raw") {
  RgbImage image;
  image.width = entry["width"];
  image.height = entry["height"];
  const std::string path = entry[raw_key];
  image.pixels = read_bytes(path);
  fs::remove(path);
  EXPECT_EQ(image.pixels.size(), static_cast<size_t>(image.width) * image.height * 3) << path;
  return image;
}

// Max and mean absolute difference in uint8 units over many images.
struct DiffStats {
  int max = 0;
  double sum = 0;
  size_t count = 0;
  size_t images = 0;
  size_t exact_images = 0;

  // Returns this image's max difference.
  int add(const RgbImage& actual, const RgbImage& expected) {
    int image_max = 0;
    for (size_t i = 0; i < actual.pixels.size(); ++i) {
      const int d = std::abs(int{actual.pixels[i]} - int{expected.pixels[i]});
      image_max = std::max(image_max, d);
      sum += d;
    }
    count += actual.pixels.size();
    ++images;
    exact_images += image_max == 0;
    max = std::max(max, image_max);
    return image_max;
  }
  double mean() const { return count == 0 ? 0.0 : sum / count; }
  std::string str() const {
    char text[160];
    std::snprintf(text, sizeof(text), "max %d, mean %.6f (uint8 units); %zu of %zu images exact",
                  max, mean(), exact_images, images);
    return text;
  }
};

bool same_shape(const RgbImage& a, const RgbImage& b) {
  return a.width == b.width && a.height == b.height && a.pixels.size() == b.pixels.size();
}

// Runs tools/pil_reference.py into a fresh `out_dir`; returns its manifest, or nothing with
// `skip_reason` set when Pillow is not available.
std::optional<json> run_pil_reference(const std::string& out_dir, const std::string& source,
                                      std::string* skip_reason) {
  const std::string python = "/usr/bin/python3";
  if (!fs::exists(python)) {
    *skip_reason = python + " not found";
    return std::nullopt;
  }
  fs::remove_all(out_dir);
  const std::string command =
      python + " '" + kSourceDir + "/tools/pil_reference.py' '" + out_dir + "' " + source;
  const int status = std::system(command.c_str());
  if (WIFEXITED(status) && WEXITSTATUS(status) == 3) {
    *skip_reason = "Pillow or numpy is not installed for " + python;
    return std::nullopt;
  }
  if (status != 0)
    throw Error("command failed (status " + std::to_string(status) + "): " + command);
  std::ifstream file(out_dir + "/manifest.json");
  return json::parse(file);
}

bool is_png(const std::string& path) { return fs::path(path).extension() == ".png"; }

// Compares one manifest entry: our decode vs Pillow's, Pillow's resize of Pillow's pixels vs
// ours of the same pixels (the resize alone), and our decode + resize vs Pillow's (end to end).
void compare_with_pil(const json& entry, DiffStats& decode_stats, DiffStats& resize_stats,
                      DiffStats& end_to_end_stats, std::map<std::string, DiffStats>* by_size) {
  const std::string input = entry["input"];
  SCOPED_TRACE(input);
  const RgbImage pil_decoded = load_reference(entry, "decoded");
  const RgbImage decoded = decode_image_file(input);
  ASSERT_TRUE(same_shape(decoded, pil_decoded))
      << decoded.width << "x" << decoded.height << " vs Pillow's " << pil_decoded.width << "x"
      << pil_decoded.height;
  const int decode_max = decode_stats.add(decoded, pil_decoded);
  // PNG is lossless: anything but equality is a conversion bug.
  EXPECT_LE(decode_max, is_png(input) ? 0 : kMaxAbsDiff) << "decode";

  for (const json& resized_entry : entry["resized"]) {
    const RgbImage pil_resized = load_reference(resized_entry);
    const std::string size =
        std::to_string(pil_resized.width) + "x" + std::to_string(pil_resized.height);
    SCOPED_TRACE(size);
    const RgbImage resized_pil_pixels =
        resize_bicubic(pil_decoded, pil_resized.width, pil_resized.height);
    ASSERT_TRUE(same_shape(resized_pil_pixels, pil_resized));
    // Same integer arithmetic as Pillow's Resample.c: the resize alone must be bit-exact.
    EXPECT_EQ(resize_stats.add(resized_pil_pixels, pil_resized), 0) << "resize alone";

    const RgbImage resized = resize_bicubic(decoded, pil_resized.width, pil_resized.height);
    EXPECT_LE(end_to_end_stats.add(resized, pil_resized), kMaxAbsDiff) << "decode + resize";
    if (by_size != nullptr) (*by_size)[size].add(resized, pil_resized);
  }
}

TEST(ImageVsPillow, CocoPhotosDecodeAndResizeLikePil) {
  if (!fs::is_directory(kCocoDir)) GTEST_SKIP() << "no COCO images at " << kCocoDir;
  std::string skip_reason;
  const std::string out_dir = kBinaryDir + "/test_image_ref/coco";
  const auto manifest =
      run_pil_reference(out_dir, "--images '" + kCocoDir + "' --sizes 480x480 64x64", &skip_reason);
  if (!manifest) GTEST_SKIP() << skip_reason;
  const json& images = (*manifest)["images"];
  ASSERT_GE(images.size(), 100u) << "expected the 159 COCO photos in " << kCocoDir;

  DiffStats decode, resize, end_to_end;
  std::map<std::string, DiffStats> by_size;
  for (const json& entry : images) {
    ASSERT_FALSE(entry.contains("pil_error")) << entry.dump();
    compare_with_pil(entry, decode, resize, end_to_end, &by_size);
  }
  std::printf("[coco] %zu photos, Pillow %s\n", images.size(),
              (*manifest)["pillow"].get<std::string>().c_str());
  std::printf("[coco] decode vs Pillow:                %s\n", decode.str().c_str());
  std::printf("[coco] resize alone vs Pillow:          %s\n", resize.str().c_str());
  std::printf("[coco] decode + resize vs Pillow:       %s\n", end_to_end.str().c_str());
  for (const auto& [size, stats] : by_size) {
    std::printf("[coco]   decode + resize to %-9s  %s\n", size.c_str(), stats.str().c_str());
  }
  EXPECT_LE(end_to_end.mean(), 0.05);
  fs::remove_all(out_dir);
}

TEST(ImageVsPillow, EdgeCasesMatchPilAndBadFilesFailLikePil) {
  std::string skip_reason;
  const std::string out_dir = kBinaryDir + "/test_image_ref/edge";
  const auto manifest =
      run_pil_reference(out_dir, "--edge-cases --sizes 480x480 64x64 13x7", &skip_reason);
  if (!manifest) GTEST_SKIP() << skip_reason;

  DiffStats decode, resize, end_to_end;
  size_t refused = 0;
  for (const json& entry : (*manifest)["images"]) {
    const std::string input = entry["input"];
    if (entry.contains("pil_error")) {
      // Pillow refuses it, so must we: a mue::Error that names the file.
      ++refused;
      try {
        decode_image_file(input);
        ADD_FAILURE() << input << " decoded, but Pillow refused it: " << entry["pil_error"];
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(input), std::string::npos) << e.what();
        std::printf("[edge] refused as Pillow does: %s\n", e.what());
      }
      continue;
    }
    const std::string mode = entry["pil_mode"];
    std::printf("[edge] %s (Pillow mode %s)\n", fs::path(input).filename().c_str(), mode.c_str());
    compare_with_pil(entry, decode, resize, end_to_end, nullptr);
  }
  EXPECT_EQ(refused, 7u) << "bad files in the edge cases";
  EXPECT_GE(decode.images, 30u);
  std::printf("[edge] decode vs Pillow:          %s\n", decode.str().c_str());
  std::printf("[edge] resize alone vs Pillow:    %s\n", resize.str().c_str());
  std::printf("[edge] decode + resize vs Pillow: %s\n", end_to_end.str().c_str());
  fs::remove_all(out_dir);
}

// ---- Bad input, without Pillow. ----

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(DecodeImage, MissingFileOrDirectoryNamesThePath) {
  const std::string path = kBinaryDir + "/no_such_dir/missing.jpg";
  const std::string message = error_of([&] { decode_image_file(path); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("cannot open"), std::string::npos) << message;
  const std::string directory_message = error_of([&] { decode_image_file(kBinaryDir); });
  EXPECT_NE(directory_message.find("is a directory"), std::string::npos) << directory_message;
}

TEST(DecodeImage, EmptyUnknownAndCorruptFilesAreErrors) {
  const std::string dir = kBinaryDir + "/test_image_bad";
  fs::create_directories(dir);
  const std::vector<std::pair<std::string, std::vector<uint8_t>>> cases = {
      {"empty.jpg", {}},
      {"text.png", {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'}},
      {"jpeg_magic_only.jpg", {0xff, 0xd8, 0xff}},
      {"jpeg_bad_marker.jpg", {0xff, 0xd8, 0xff, 0x00, 0x12, 0x34, 0x56, 0x78}},
      {"png_signature_only.png", {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'}},
      {"png_bad_chunk.png",
       {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R', 0,
        0,    0,   0,   0,   0,    0,    0,    8,    2, 0, 0, 0,  1,   2,   3,   4}},
  };
  const std::map<std::string, std::string> expected_reason = {
      {"empty.jpg", "empty"},
      {"text.png", "unknown image format"},
      {"jpeg_magic_only.jpg", "JPEG"},
      {"jpeg_bad_marker.jpg", "JPEG"},
      {"png_signature_only.png", "truncated"},
      {"png_bad_chunk.png", "PNG"},
  };
  for (const auto& [name, bytes] : cases) {
    const std::string path = dir + "/" + name;
    write_bytes(path, bytes);
    const std::string message = error_of([&] { decode_image_file(path); });
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find(expected_reason.at(name)), std::string::npos) << message;
    std::printf("[bad] %s\n", message.c_str());
    // The in-memory entry point names what the caller passed.
    if (!bytes.empty()) {
      const std::string memory_message =
          error_of([&] { decode_image(bytes.data(), bytes.size(), "request #7", 1 << 20); });
      EXPECT_NE(memory_message.find("request #7"), std::string::npos) << memory_message;
    }
  }
  fs::remove_all(dir);
}

TEST(DecodeImage, TruncatedPhotoAndPixelLimitAreErrors) {
  const std::string photo = kCocoDir + "/000000000139.jpg";
  if (!fs::exists(photo)) GTEST_SKIP() << "no COCO photo at " << photo;
  const RgbImage full = decode_image_file(photo);
  ASSERT_EQ(full.width, 640);
  ASSERT_EQ(full.height, 426);

  // Refused from the header: the limit is checked before any pixel is decoded.
  const std::string limit_message = error_of([&] { decode_image_file(photo, 640 * 426 - 1); });
  EXPECT_NE(limit_message.find(photo), std::string::npos) << limit_message;
  EXPECT_NE(limit_message.find("limit"), std::string::npos) << limit_message;
  EXPECT_NO_THROW(decode_image_file(photo, 640 * 426));

  // libjpeg only warns on a premature end and pads with grey; we refuse, as Pillow does.
  const std::vector<uint8_t> bytes = read_bytes(photo);
  for (const size_t keep : {bytes.size() / 10, bytes.size() / 2, bytes.size() - 100}) {
    const std::string message = error_of(
        [&] { decode_image(bytes.data(), keep, "truncated.jpg", kDefaultMaxImagePixels); });
    EXPECT_NE(message.find("truncated.jpg"), std::string::npos) << message;
    EXPECT_NE(message.find("Premature end"), std::string::npos) << message;
  }
}

// ---- Resize and normalisation properties, without Pillow. ----

RgbImage patterned_image(int width, int height) {
  RgbImage image{width, height, std::vector<uint8_t>(static_cast<size_t>(width) * height * 3)};
  for (size_t i = 0; i < image.pixels.size(); ++i) image.pixels[i] = (i * 37 + i / 7) % 256;
  return image;
}

TEST(ResizeBicubic, ConstantImagesStayConstant) {
  // The fixed-point weights of every output pixel sum to 1 within rounding, so a flat image
  // stays flat at any scale, including the extremes 0 and 255.
  for (const uint8_t value : {0, 1, 128, 254, 255}) {
    RgbImage flat{31, 17, std::vector<uint8_t>(31 * 17 * 3, value)};
    for (const auto& [w, h] :
         std::vector<std::pair<int, int>>{{480, 480}, {3, 2}, {1, 1}, {31, 40}}) {
      const RgbImage out = resize_bicubic(flat, w, h);
      ASSERT_EQ(out.pixels.size(), static_cast<size_t>(w) * h * 3);
      EXPECT_TRUE(
          std::all_of(out.pixels.begin(), out.pixels.end(), [&](uint8_t v) { return v == value; }))
          << int{value} << " at " << w << "x" << h;
    }
  }
}

TEST(ResizeBicubic, SameSizeIsACopyAndBadSizesAreErrors) {
  const RgbImage image = patterned_image(20, 10);
  EXPECT_EQ(resize_bicubic(image, 20, 10).pixels, image.pixels);
  EXPECT_THROW(resize_bicubic(image, 0, 10), Error);
  EXPECT_THROW(resize_bicubic(image, 10, -1), Error);
  RgbImage broken = image;
  broken.pixels.pop_back();
  EXPECT_NE(error_of([&] { resize_bicubic(broken, 5, 5); }).find("not a valid RGB image"),
            std::string::npos);
}

TEST(ResizeBicubic, SingleAxisResizeLeavesTheOtherAxisAlone) {
  // Only the horizontal pass runs: each row is resampled independently of the others.
  const RgbImage image = patterned_image(40, 6);
  const RgbImage wide = resize_bicubic(image, 97, 6);
  for (int y = 0; y < 6; ++y) {
    RgbImage row{40, 1, std::vector<uint8_t>(image.pixel(0, y), image.pixel(0, y) + 40 * 3)};
    const RgbImage row_out = resize_bicubic(row, 97, 1);
    EXPECT_TRUE(std::equal(row_out.pixels.begin(), row_out.pixels.end(), wide.pixel(0, y)))
        << "row " << y;
  }
}

TEST(Normalize, MatchesToTensorThenNormalize) {
  RgbImage image{2, 1, {0, 255, 128, 64, 1, 254}};
  const float mean[3] = {0.485f, 0.456f, 0.406f};
  const float std[3] = {0.229f, 0.224f, 0.225f};
  std::vector<float> out(6);
  normalize_to_nhwc(image, mean, std, out.data());
  for (int i = 0; i < 6; ++i) {
    const int c = i % 3;
    EXPECT_EQ(out[i], (image.pixels[i] / 255.0f - mean[c]) / std[c]) << i;
  }
  // spec 3.8: OFA's mean = std = 0.5 maps [0, 255] onto [-1, 1].
  normalize_to_nhwc(image, kOfaImageMean, kOfaImageStd, out.data());
  EXPECT_EQ(out[0], -1.0f);
  EXPECT_EQ(out[1], 1.0f);
  EXPECT_NEAR(out[2], 128 / 127.5 - 1, 1e-6);
}

TEST(PreprocessImage, IsDecodeResizeNormalize) {
  const std::string photo = kCocoDir + "/000000000139.jpg";
  if (!fs::exists(photo)) GTEST_SKIP() << "no COCO photo at " << photo;
  const Tensor pixels = preprocess_image(photo, kOfaImageSize, kOfaImageSize);
  ASSERT_EQ(pixels.shape(), (Shape{480, 480, 3}));
  const RgbImage resized = resize_bicubic(decode_image_file(photo), 480, 480);
  std::vector<float> expected(480 * 480 * 3);
  normalize_to_nhwc(resized, kOfaImageMean, kOfaImageStd, expected.data());
  const float* actual = pixels.data<float>();
  EXPECT_TRUE(std::equal(expected.begin(), expected.end(), actual));
  const auto [lowest, highest] = std::minmax_element(actual, actual + expected.size());
  EXPECT_GE(*lowest, -1.0f);
  EXPECT_LE(*highest, 1.0f);
}

}  // namespace
}  // namespace mue
