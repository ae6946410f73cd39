// Memory-mapped safetensors files: tensors are views into the mapping, except those whose data
// the header leaves misaligned for their element type, which are copied.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mue/tensor.h"

namespace mue {

class SafeTensorsFile {
 public:
  struct Entry {
    DType dtype;
    Shape shape;
    size_t offset;  // into the data section
    size_t nbytes;
  };

  // Maps `path` read-only and validates the header: every entry's dtype, shape and byte range
  // (inside the data section, of the shape's size, overlapping no other entry).
  static std::shared_ptr<SafeTensorsFile> open(const std::string& path);
  ~SafeTensorsFile();

  const std::string& path() const { return path_; }
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  const Entry& entry(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A view of the tensor's bytes that keeps the mapping alive; an owned, aligned copy when the
  // bytes are not aligned to the element size.
  Tensor get(const std::string& name) const;

 private:
  SafeTensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const char* data_ = nullptr;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
  std::weak_ptr<SafeTensorsFile> self_;
};

// Writes tensors (owned or views) as a safetensors file; used by tests and tools.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors);

// IEEE half to float, for F16 storage.
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);

}  // namespace mue
