#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

namespace mue {
namespace {

DType parse_dtype(const std::string& s, const std::string& where) {
  if (s == "F32") return DType::kF32;
  if (s == "F16") return DType::kF16;
  if (s == "BF16") return DType::kBF16;
  if (s == "I8") return DType::kI8;
  if (s == "U8") return DType::kU8;
  if (s == "I32") return DType::kI32;
  if (s == "I64") return DType::kI64;
  throw Error(where + ": unsupported dtype \"" + s + "\"");
}

}  // namespace

std::shared_ptr<SafeTensorsFile> SafeTensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw Error("safetensors file " + path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error("safetensors file " + path + ": cannot stat: " + std::strerror(errno));
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw Error("safetensors file " + path + ": too short (" + std::to_string(size) +
                " bytes) to hold a header");
  }
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED)
    throw Error("safetensors file " + path + ": mmap failed: " + std::strerror(errno));

  std::shared_ptr<SafeTensorsFile> file(new SafeTensorsFile());
  file->self_ = file;
  file->path_ = path;
  file->map_ = map;
  file->map_size_ = size;

  const auto* bytes = static_cast<const unsigned char*>(map);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > size - 8)
    throw Error("safetensors file " + path + ": header length " + std::to_string(header_len) +
                " exceeds the file size " + std::to_string(size));
  file->data_ = static_cast<const char*>(map) + 8 + header_len;
  size_t data_size = size - 8 - header_len;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(static_cast<const char*>(map) + 8,
                                   static_cast<const char*>(map) + 8 + header_len);
  } catch (const std::exception& e) {
    throw Error("safetensors file " + path + ": header is not valid JSON: " + e.what());
  }
  if (!header.is_object())
    throw Error("safetensors file " + path + ": header is not a JSON object");
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    std::string where = "safetensors file " + path + ", tensor \"" + name + "\"";
    if (name == "__metadata__") {
      if (it->is_object())
        for (auto m = it->begin(); m != it->end(); ++m)
          if (m->is_string()) file->metadata_[m.key()] = m->get<std::string>();
      continue;
    }
    const auto& v = *it;
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
        !v.contains("data_offsets") || !v["dtype"].is_string() || !v["shape"].is_array() ||
        !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
      throw Error(where + ": entry needs dtype, shape and two data_offsets");
    Entry e;
    e.dtype = parse_dtype(v["dtype"].get<std::string>(), where);
    for (const auto& d : v["shape"]) {
      // An unsigned value above INT64_MAX would wrap to a negative int64: refuse it here.
      if (!d.is_number_integer() ||
          (d.is_number_unsigned() ? d.get<uint64_t>() > INT64_MAX : d.get<int64_t>() < 0))
        throw Error(where +
                    ": shape has a dimension that is not a non-negative int64: " + d.dump());
      e.shape.push_back(d.get<int64_t>());
    }
    if (!v["data_offsets"][0].is_number_unsigned() || !v["data_offsets"][1].is_number_unsigned())
      throw Error(where + ": data_offsets are not non-negative integers");
    uint64_t begin = v["data_offsets"][0].get<uint64_t>();
    uint64_t end = v["data_offsets"][1].get<uint64_t>();
    if (end < begin || end > data_size)
      throw Error(where + ": data range [" + std::to_string(begin) + "," + std::to_string(end) +
                  ") lies outside the data section of " + std::to_string(data_size) +
                  " bytes (file truncated?)");
    e.offset = begin;
    e.nbytes = end - begin;
    // The byte count is checked: [2^62] F32 would otherwise wrap to 0 and match an empty range.
    std::optional<size_t> expected = checked_nbytes(e.shape, e.dtype);
    if (!expected)
      throw Error(where + ": shape " + shape_str(e.shape) + " of " + dtype_name(e.dtype) +
                  " is too large: its byte count overflows");
    if (*expected != e.nbytes)
      throw Error(where + ": shape " + shape_str(e.shape) + " of " + dtype_name(e.dtype) +
                  " needs " + std::to_string(*expected) + " bytes but the entry has " +
                  std::to_string(e.nbytes));
    file->entries_.emplace(name, std::move(e));
  }
  // Tensors must not share bytes: one would be the other's data under another name and shape.
  std::vector<std::pair<const std::string*, const Entry*>> by_offset;
  for (const auto& [name, e] : file->entries_)
    if (e.nbytes) by_offset.emplace_back(&name, &e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto& a, const auto& b) { return a.second->offset < b.second->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const auto& [prev_name, prev] = by_offset[i - 1];
    const auto& [name, e] = by_offset[i];
    if (e->offset < prev->offset + prev->nbytes)
      throw Error("safetensors file " + path + ", tensor \"" + *name + "\": data range [" +
                  std::to_string(e->offset) + "," + std::to_string(e->offset + e->nbytes) +
                  ") overlaps tensor \"" + *prev_name + "\" at [" + std::to_string(prev->offset) +
                  "," + std::to_string(prev->offset + prev->nbytes) + ")");
  }
  return file;
}

SafeTensorsFile::~SafeTensorsFile() {
  if (map_) munmap(map_, map_size_);
}

const SafeTensorsFile::Entry& SafeTensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end())
    throw Error("safetensors file " + path_ + ": no tensor \"" + name + "\"");
  return it->second;
}

std::vector<std::string> SafeTensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : entries_) out.push_back(name);
  return out;
}

Tensor SafeTensorsFile::get(const std::string& name) const {
  const Entry& e = entry(name);
  const char* bytes = data_ + e.offset;
  // The data section starts wherever the header ends, so an element may sit at an address its
  // type cannot be read from: such a tensor is copied into aligned memory of its own.
  if (reinterpret_cast<uintptr_t>(bytes) % dtype_size(e.dtype) != 0) {
    Tensor copy = Tensor::empty(e.shape, e.dtype);
    if (e.nbytes) std::memcpy(copy.raw(), bytes, e.nbytes);
    return copy;
  }
  auto owner = self_.lock();
  return Tensor::view(const_cast<char*>(bytes), e.shape, e.dtype, owner);
}

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  size_t offset = 0;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", dtype_name(t.dtype())},
                    {"shape", t.shape()},
                    {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string text = header.dump();
  while ((text.size() + 8) % 8) text += ' ';  // keep the data section 8-byte aligned
  std::ofstream out(path, std::ios::binary);
  if (!out) throw Error("cannot write safetensors file " + path);
  uint64_t n = text.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [name, t] : tensors)
    out.write(static_cast<const char*>(t.raw()), static_cast<std::streamsize>(t.nbytes()));
  if (!out) throw Error("error writing safetensors file " + path);
}

float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000 | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  int32_t exp = static_cast<int32_t>((x >> 23) & 0xff) - 127 + 15;
  uint32_t mant = x & 0x7fffff;
  if (((x >> 23) & 0xff) == 0xff) return static_cast<uint16_t>(sign | 0x7c00 | (mant ? 0x200 : 0));
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00);
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000;
    uint32_t shift = static_cast<uint32_t>(14 - exp);
    uint32_t half = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) ++half;  // round to nearest even
  return static_cast<uint16_t>(half);
}

}  // namespace mue
