// Image decoding (JPEG, PNG) and the preprocessing OFA applies before the vision backbone
// (spec 3.8): convert to RGB, PIL bicubic resize, scale to [0,1] and normalise.
// Every step reproduces Pillow 9.4 exactly, so the engine sees the pixels the reference saw.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "mue/tensor.h"

namespace mue {

// An 8-bit RGB image, rows top to bottom, each pixel R,G,B (HWC).
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;  // width * height * 3

  uint8_t* pixel(int x, int y) { return pixels.data() + (static_cast<size_t>(y) * width + x) * 3; }
  const uint8_t* pixel(int x, int y) const {
    return pixels.data() + (static_cast<size_t>(y) * width + x) * 3;
  }
};

// Larger images are refused from their header, before any pixel is decoded (a decompression
// bomb guard; Pillow's own limit is ~179 megapixels).
constexpr int64_t kDefaultMaxImagePixels = int64_t{64} * 1024 * 1024;

// spec 3.8: OFA's base fine-tuning size and normalisation (the range becomes [-1, 1]).
constexpr int kOfaImageSize = 480;
constexpr float kOfaImageMean[3] = {0.5f, 0.5f, 0.5f};
constexpr float kOfaImageStd[3] = {0.5f, 0.5f, 0.5f};

// Decodes a JPEG or PNG (detected from its magic bytes) to RGB exactly as Pillow's
// `Image.open(path).convert("RGB")` does with the same libjpeg:
//  - JPEG: greyscale, YCbCr/RGB, and 4-channel CMYK/YCCK (always read with Adobe's inverted
//    polarity, as Pillow assumes) converted with Pillow's CMYK->RGB formula.
//  - PNG: grey, grey+alpha, RGB, RGBA, palette, 1/2/4/8/16 bits, interlaced. Alpha and tRNS are
//    dropped (not composited); 16-bit samples keep their high byte, except 16-bit greyscale,
//    which Pillow reads as 32-bit integers and clips to 255 on conversion.
// Throws mue::Error naming `path` and the reason for a missing, empty, truncated, corrupt or
// unsupported file, or one with more than `max_pixels` pixels.
RgbImage decode_image_file(const std::string& path, int64_t max_pixels = kDefaultMaxImagePixels);
// The same from memory; `name_for_errors` names the source in error messages.
RgbImage decode_image(const uint8_t* data, size_t size, const std::string& name_for_errors,
                      int64_t max_pixels = kDefaultMaxImagePixels);

// Pillow's `Image.resize((out_w, out_h), Image.BICUBIC)` for an RGB image, bit for bit:
// separable convolution (horizontal pass first, rounded to 8 bits, then vertical), the cubic
// kernel with a = -0.5 widened by the downscale factor (antialiasing), and Pillow's 22-bit
// fixed-point coefficients.
RgbImage resize_bicubic(const RgbImage& image, int out_w, int out_h);

// torchvision ToTensor + Normalize, kept in HWC order: out[(y*W + x)*3 + c] =
// (pixel/255 - mean[c]) / std[c], computed in float like torch. `out` holds H*W*3 floats.
void normalize_to_nhwc(const RgbImage& image, const float mean[3], const float std[3], float* out);

// spec 3.8 in one call: decode, resize to out_w x out_h with PIL bicubic, normalise.
// Returns a float tensor [out_h, out_w, 3].
Tensor preprocess_image(const std::string& path, int out_w, int out_h,
                        const float mean[3] = kOfaImageMean, const float std[3] = kOfaImageStd);

}  // namespace mue
