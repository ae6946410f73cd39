#include "io/image.h"

#include <jpeglib.h>
// jpeglib.h must come first: jerror.h uses its types.
#include <jerror.h>
#include <png.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

namespace mue {
namespace {

std::string describe(const std::string& name) { return "image " + name; }

// Pillow's CMYK -> RGB (Convert.c cmyk2rgb): each channel is (255-k) - c*(255-k)/255, with
// its exact rounded division by 255.
inline uint8_t cmyk_channel_to_rgb(int c, int k) {
  const int not_k = 255 - k;
  const int t = c * not_k + 128;
  const int c_times_not_k_over_255 = ((t >> 8) + t) >> 8;
  return static_cast<uint8_t>(std::clamp(not_k - c_times_not_k_over_255, 0, 255));
}

// ---------------------------------------------------------------------------------------------
// JPEG. libjpeg reports errors through error_exit, which by default calls exit(); ours jumps
// back to the frame that called setjmp. No C++ object with a destructor may live in the frames
// the jump skips, so the decoder state lives in JpegDecoder, owned by the caller's frame.

struct JpegErrorManager {
  jpeg_error_mgr pub;  // first member: libjpeg sees a jpeg_error_mgr*
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX + 64];
};

struct JpegDecoder {
  jpeg_decompress_struct cinfo;
  JpegErrorManager errors;
  bool created = false;
  ~JpegDecoder() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

extern "C" void jpeg_fail(j_common_ptr cinfo) {
  auto* errors = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, errors->message);
  std::longjmp(errors->jump, 1);
}

// Warnings (msg_level -1) about corrupt data are ignored, as Pillow ignores them, except a
// premature end of data: libjpeg would pad the image with grey, Pillow raises "image file is
// truncated", and so do we.
extern "C" void jpeg_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level >= 0) return;  // trace messages
  if (cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(cinfo);
  cinfo->err->num_warnings++;
}

// Returns false with decoder.errors.message set on failure.
bool run_jpeg_decode(JpegDecoder& decoder, const uint8_t* data, size_t size, int64_t max_pixels,
                     RgbImage& image, std::vector<uint8_t>& row) {
  jpeg_decompress_struct& cinfo = decoder.cinfo;
  cinfo.err = jpeg_std_error(&decoder.errors.pub);
  decoder.errors.pub.error_exit = jpeg_fail;
  decoder.errors.pub.emit_message = jpeg_message;
  decoder.errors.message[0] = '\0';
  if (setjmp(decoder.errors.jump)) return false;

  jpeg_create_decompress(&cinfo);
  decoder.created = true;
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);

  const int64_t pixels = int64_t{cinfo.image_width} * cinfo.image_height;
  if (pixels > max_pixels) {
    std::snprintf(decoder.errors.message, sizeof(decoder.errors.message),
                  "%ux%u JPEG has %lld pixels, more than the limit of %lld", cinfo.image_width,
                  cinfo.image_height, static_cast<long long>(pixels),
                  static_cast<long long>(max_pixels));
    return false;
  }
  // Pillow's modes by component count: L, RGB, CMYK (libjpeg turns YCbCr and YCCK into those).
  const int components = cinfo.num_components;
  if (components == 1) {
    cinfo.out_color_space = JCS_GRAYSCALE;
  } else if (components == 3) {
    cinfo.out_color_space = JCS_RGB;
  } else if (components == 4) {
    cinfo.out_color_space = JCS_CMYK;
  } else {
    std::snprintf(decoder.errors.message, sizeof(decoder.errors.message),
                  "unsupported JPEG with %d colour components (1, 3 or 4 expected)", components);
    return false;
  }
  // Defaults (JDCT_ISLOW, fancy upsampling) are what Pillow uses outside draft mode.
  jpeg_start_decompress(&cinfo);

  image.width = static_cast<int>(cinfo.output_width);
  image.height = static_cast<int>(cinfo.output_height);
  image.pixels.resize(static_cast<size_t>(image.width) * image.height * 3);
  row.resize(static_cast<size_t>(image.width) * cinfo.output_components);
  while (cinfo.output_scanline < cinfo.output_height) {
    const int y = static_cast<int>(cinfo.output_scanline);
    uint8_t* out = image.pixel(0, y);
    JSAMPROW target = components == 3 ? out : row.data();
    if (jpeg_read_scanlines(&cinfo, &target, 1) != 1) {
      std::snprintf(decoder.errors.message, sizeof(decoder.errors.message),
                    "JPEG decoder returned no data for row %d", y);
      return false;
    }
    if (components == 1) {
      for (int x = 0; x < image.width; ++x) out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = row[x];
    } else if (components == 4) {
      // Pillow reads every 4-component JPEG as Adobe's inverted CMYK ("CMYK;I").
      for (int x = 0; x < image.width; ++x) {
        const uint8_t* cmyk = &row[4 * x];
        const int k = 255 - cmyk[3];
        for (int c = 0; c < 3; ++c) out[3 * x + c] = cmyk_channel_to_rgb(255 - cmyk[c], k);
      }
    }
  }
  // No jpeg_finish_decompress: every row is decoded, and a missing EOI marker after the last
  // scan is no reason to reject the image (Pillow does not check for it either).
  return true;
}

RgbImage decode_jpeg(const uint8_t* data, size_t size, const std::string& name,
                     int64_t max_pixels) {
  JpegDecoder decoder;
  RgbImage image;
  std::vector<uint8_t> row;
  if (!run_jpeg_decode(decoder, data, size, max_pixels, image, row)) {
    throw Error(describe(name) + ": cannot decode JPEG: " + decoder.errors.message);
  }
  return image;
}

// ---------------------------------------------------------------------------------------------
// PNG. libpng's error callback must not return; ours jumps back to png_jmpbuf.

struct PngDecoder {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t position = 0;
  char message[256] = {};
  ~PngDecoder() {
    if (png != nullptr) png_destroy_read_struct(&png, info != nullptr ? &info : nullptr, nullptr);
  }
};

extern "C" void png_fail(png_structp png, png_const_charp message) {
  auto* decoder = static_cast<PngDecoder*>(png_get_error_ptr(png));
  std::snprintf(decoder->message, sizeof(decoder->message), "%s", message);
  png_longjmp(png, 1);
}

extern "C" void png_ignore_warning(png_structp, png_const_charp) {}

extern "C" void png_read_from_memory(png_structp png, png_bytep out, png_size_t length) {
  auto* decoder = static_cast<PngDecoder*>(png_get_io_ptr(png));
  if (length > decoder->size - decoder->position) png_error(png, "file is truncated");
  std::memcpy(out, decoder->data + decoder->position, length);
  decoder->position += length;
}

bool run_png_decode(PngDecoder& decoder, int64_t max_pixels, RgbImage& image,
                    std::vector<uint8_t>& buffer, std::vector<png_bytep>& rows) {
  png_structp png = decoder.png;
  png_infop info = decoder.info;
  if (setjmp(png_jmpbuf(png))) return false;

  png_set_read_fn(png, &decoder, png_read_from_memory);
  png_read_info(png, info);
  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0;
  png_get_IHDR(png, info, &width, &height, &bit_depth, &color_type, nullptr, nullptr, nullptr);
  const int64_t pixels = int64_t{width} * height;
  if (pixels > max_pixels) {
    std::snprintf(decoder.message, sizeof(decoder.message),
                  "%ux%u PNG has %lld pixels, more than the limit of %lld", width, height,
                  static_cast<long long>(pixels), static_cast<long long>(max_pixels));
    return false;
  }
  // Pillow reads 16-bit greyscale as 32-bit integers ("I") and convert("RGB") clips them to
  // 255; every other 16-bit sample keeps its high byte (its ";16B" unpackers).
  const bool grey16 = bit_depth == 16 && color_type == PNG_COLOR_TYPE_GRAY;
  if (bit_depth == 16 && !grey16) png_set_strip_16(png);
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);

  // Channels now: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA (palettes with tRNS expand to RGBA).
  const int channels = png_get_channels(png, info);
  const size_t row_bytes = png_get_rowbytes(png, info);
  buffer.resize(row_bytes * height);
  rows.resize(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = buffer.data() + y * row_bytes;
  png_read_image(png, rows.data());
  // No png_read_end: the pixels are complete, and trailing chunks do not change them.

  image.width = static_cast<int>(width);
  image.height = static_cast<int>(height);
  image.pixels.resize(static_cast<size_t>(pixels) * 3);
  for (int y = 0; y < image.height; ++y) {
    const uint8_t* in = rows[y];
    uint8_t* out = image.pixel(0, y);
    for (int x = 0; x < image.width; ++x, out += 3) {
      if (grey16) {
        const int value = (in[2 * x] << 8) | in[2 * x + 1];
        out[0] = out[1] = out[2] = static_cast<uint8_t>(std::min(value, 255));
      } else if (channels <= 2) {  // alpha dropped, as convert("RGB") does
        out[0] = out[1] = out[2] = in[channels * x];
      } else {
        std::memcpy(out, in + static_cast<size_t>(channels) * x, 3);
      }
    }
  }
  return true;
}

RgbImage decode_png(const uint8_t* data, size_t size, const std::string& name, int64_t max_pixels) {
  PngDecoder decoder;
  decoder.data = data;
  decoder.size = size;
  decoder.png =
      png_create_read_struct(PNG_LIBPNG_VER_STRING, &decoder, png_fail, png_ignore_warning);
  if (decoder.png != nullptr) decoder.info = png_create_info_struct(decoder.png);
  if (decoder.png == nullptr || decoder.info == nullptr) {
    throw Error(describe(name) + ": cannot decode PNG: libpng could not allocate its state");
  }
  RgbImage image;
  std::vector<uint8_t> buffer;
  std::vector<png_bytep> rows;
  if (!run_png_decode(decoder, max_pixels, image, buffer, rows)) {
    throw Error(describe(name) + ": cannot decode PNG: " + decoder.message);
  }
  return image;
}

}  // namespace

RgbImage decode_image(const uint8_t* data, size_t size, const std::string& name_for_errors,
                      int64_t max_pixels) {
  if (size == 0) throw Error(describe(name_for_errors) + ": file is empty");
  static constexpr uint8_t kPngSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) {
    return decode_jpeg(data, size, name_for_errors, max_pixels);
  }
  if (size >= 8 && std::memcmp(data, kPngSignature, 8) == 0) {
    return decode_png(data, size, name_for_errors, max_pixels);
  }
  char first_bytes[40] = {};
  for (size_t i = 0, n = std::min<size_t>(size, 8); i < n; ++i) {
    std::snprintf(first_bytes + 3 * i, 4, "%02x ", data[i]);
  }
  throw Error(describe(name_for_errors) +
              ": unknown image format (only JPEG and PNG are supported); it starts with " +
              first_bytes);
}

RgbImage decode_image_file(const std::string& path, int64_t max_pixels) {
  std::error_code ignored;
  if (std::filesystem::is_directory(path, ignored))
    throw Error(describe(path) + ": is a directory");
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) throw Error(describe(path) + ": cannot open: " + std::strerror(errno));
  const std::streamsize size = file.tellg();
  if (size < 0) throw Error(describe(path) + ": cannot determine the file size");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  file.seekg(0);
  if (size > 0 && !file.read(reinterpret_cast<char*>(bytes.data()), size)) {
    throw Error(describe(path) + ": read error");
  }
  return decode_image(bytes.data(), bytes.size(), path, max_pixels);
}

// ---------------------------------------------------------------------------------------------
// Resize: Pillow's libImaging/Resample.c for 8-bit images.

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's PRECISION_BITS
constexpr double kBicubicSupport = 2.0;

// Per output pixel: the first input index, how many inputs, and their fixed-point weights.
struct ResampleWeights {
  int kernel_size = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> weights;  // [out][kernel_size]
};

// Pillow's distribution builds compute these doubles without fused multiply-add; -march=native
// would contract them. No weight was seen to change (inputs 1..1200 to common sizes), but
// keeping Pillow's exact operations makes bit-equality hold by construction.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

// Keys' cubic convolution kernel with a = -0.5 (Pillow's bicubic_filter).
double bicubic_kernel(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for the box [0, in_size).
ResampleWeights precompute_weights(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);  // widen the kernel when shrinking
  const double support = kBicubicSupport * filter_scale;
  ResampleWeights w;
  w.kernel_size = static_cast<int>(std::ceil(support)) * 2 + 1;
  w.first.resize(out_size);
  w.count.resize(out_size);
  w.weights.assign(static_cast<size_t>(out_size) * w.kernel_size, 0);
  std::vector<double> k(w.kernel_size);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double inverse_scale = 1.0 / filter_scale;
    const int x_min = std::max(static_cast<int>(center - support + 0.5), 0);
    const int x_max = std::min(static_cast<int>(center + support + 0.5), in_size) - x_min;
    double total = 0.0;
    for (int x = 0; x < x_max; ++x) {
      k[x] = bicubic_kernel((x + x_min - center + 0.5) * inverse_scale);
      total += k[x];
    }
    int32_t* out = &w.weights[static_cast<size_t>(xx) * w.kernel_size];
    for (int x = 0; x < x_max; ++x) {
      const double normalised = total != 0.0 ? k[x] / total : k[x];
      const double fixed = normalised * (1 << kPrecisionBits);
      out[x] = static_cast<int32_t>(normalised < 0 ? -0.5 + fixed : 0.5 + fixed);
    }
    w.first[xx] = x_min;
    w.count[xx] = x_max;
  }
  return w;
}

#if !defined(__clang__) && defined(__GNUC__)
#pragma GCC pop_options
#endif

inline uint8_t clip8(int32_t accumulator) {
  return static_cast<uint8_t>(std::clamp(accumulator >> kPrecisionBits, 0, 255));
}

// Resamples along x: rows [row_begin, row_begin + out.height) of `in` into `out`.
void resample_horizontal(const RgbImage& in, int row_begin, const ResampleWeights& w,
                         RgbImage& out) {
  for (int y = 0; y < out.height; ++y) {
    const uint8_t* in_row = in.pixel(0, row_begin + y);
    uint8_t* out_px = out.pixel(0, y);
    for (int xx = 0; xx < out.width; ++xx, out_px += 3) {
      const int32_t* k = &w.weights[static_cast<size_t>(xx) * w.kernel_size];
      const uint8_t* src = in_row + 3 * w.first[xx];
      int32_t r = 1 << (kPrecisionBits - 1), g = r, b = r;  // rounding offset
      for (int x = 0; x < w.count[xx]; ++x, src += 3) {
        r += src[0] * k[x];
        g += src[1] * k[x];
        b += src[2] * k[x];
      }
      out_px[0] = clip8(r);
      out_px[1] = clip8(g);
      out_px[2] = clip8(b);
    }
  }
}

// Resamples along y; w.first is relative to the first row of `in`.
void resample_vertical(const RgbImage& in, const ResampleWeights& w, int row_offset,
                       RgbImage& out) {
  const size_t stride = static_cast<size_t>(in.width) * 3;
  for (int yy = 0; yy < out.height; ++yy) {
    const int32_t* k = &w.weights[static_cast<size_t>(yy) * w.kernel_size];
    const uint8_t* column_top = in.pixel(0, w.first[yy] - row_offset);
    uint8_t* out_row = out.pixel(0, yy);
    for (size_t i = 0; i < stride; ++i) {
      const uint8_t* src = column_top + i;
      int32_t sum = 1 << (kPrecisionBits - 1);
      for (int y = 0; y < w.count[yy]; ++y, src += stride) sum += *src * k[y];
      out_row[i] = clip8(sum);
    }
  }
}

}  // namespace

RgbImage resize_bicubic(const RgbImage& image, int out_w, int out_h) {
  if (out_w < 1 || out_h < 1) {
    throw Error("resize_bicubic: output size " + std::to_string(out_w) + "x" +
                std::to_string(out_h) + " must be at least 1x1");
  }
  if (image.width < 1 || image.height < 1 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3) {
    throw Error("resize_bicubic: input image " + std::to_string(image.width) + "x" +
                std::to_string(image.height) + " with " + std::to_string(image.pixels.size()) +
                " bytes is not a valid RGB image");
  }
  const bool need_horizontal = out_w != image.width;
  const bool need_vertical = out_h != image.height;
  if (!need_horizontal && !need_vertical) return image;

  // Pillow: horizontal pass first, over only the rows the vertical pass will read, rounded and
  // clipped to 8 bits; then the vertical pass.
  const ResampleWeights vertical = precompute_weights(image.height, out_h);
  const int row_begin = vertical.first.front();
  const int row_end = vertical.first.back() + vertical.count.back();
  RgbImage horizontal_out;
  const RgbImage* vertical_in = &image;
  int row_offset = 0;
  if (need_horizontal) {
    const ResampleWeights horizontal = precompute_weights(image.width, out_w);
    horizontal_out.width = out_w;
    horizontal_out.height = need_vertical ? row_end - row_begin : image.height;
    horizontal_out.pixels.resize(static_cast<size_t>(out_w) * horizontal_out.height * 3);
    resample_horizontal(image, need_vertical ? row_begin : 0, horizontal, horizontal_out);
    if (!need_vertical) return horizontal_out;
    vertical_in = &horizontal_out;
    row_offset = row_begin;
  }
  RgbImage out;
  out.width = vertical_in->width;
  out.height = out_h;
  out.pixels.resize(static_cast<size_t>(out.width) * out_h * 3);
  resample_vertical(*vertical_in, vertical, row_offset, out);
  return out;
}

void normalize_to_nhwc(const RgbImage& image, const float mean[3], const float std[3], float* out) {
  const size_t pixels = static_cast<size_t>(image.width) * image.height;
  if (image.pixels.size() != pixels * 3) {
    throw Error("normalize_to_nhwc: image " + std::to_string(image.width) + "x" +
                std::to_string(image.height) + " has " + std::to_string(image.pixels.size()) +
                " bytes, expected " + std::to_string(pixels * 3));
  }
  for (size_t i = 0; i < pixels; ++i) {
    for (int c = 0; c < 3; ++c) {
      // Same float operations as ToTensor (x / 255) then Normalize ((x - mean) / std).
      const float scaled = static_cast<float>(image.pixels[3 * i + c]) / 255.0f;
      out[3 * i + c] = (scaled - mean[c]) / std[c];
    }
  }
}

Tensor preprocess_image(const std::string& path, int out_w, int out_h, const float mean[3],
                        const float std[3]) {
  const RgbImage resized = resize_bicubic(decode_image_file(path), out_w, out_h);
  Tensor out = Tensor::empty({out_h, out_w, 3});
  normalize_to_nhwc(resized, mean, std, out.data<float>());
  return out;
}

}  // namespace mue
