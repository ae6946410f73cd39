// Fuzzes the JPEG and PNG decoders and the bicubic resize: decode from memory, then resize to a
// size taken from the input's first bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "io/image.h"
#include "mue/tensor.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A smaller pixel limit than the default keeps each run fast; the header check is the same.
  constexpr int64_t kMaxPixels = int64_t{1} << 20;
  mue::RgbImage image;
  try {
    image = mue::decode_image(data, size, "fuzz input", kMaxPixels);
  } catch (const mue::Error&) {
    return 0;
  }
  if (image.width < 1 || image.height < 1 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3)
    std::abort();
  const int out_w = 1 + (size > 0 ? data[size - 1] % 97 : 0);
  const int out_h = 1 + (size > 1 ? data[size - 2] % 89 : 0);
  mue::RgbImage resized = mue::resize_bicubic(image, out_w, out_h);
  if (resized.width != out_w || resized.height != out_h ||
      resized.pixels.size() != static_cast<size_t>(out_w) * out_h * 3)
    std::abort();
  std::vector<float> normalized(resized.pixels.size());
  mue::normalize_to_nhwc(resized, mue::kOfaImageMean, mue::kOfaImageStd, normalized.data());
  return 0;
}
