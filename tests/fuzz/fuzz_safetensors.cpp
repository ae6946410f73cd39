// Fuzzes the safetensors header and tensor table: open, then read every tensor as the engine
// does (views, aligned copies, F16/BF16 widening). Only mue::Error may escape the loader.
#include <cstddef>
#include <cstdint>

#include "fuzz_util.h"
#include "io/safetensors.h"
#include "io/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::filesystem::path path = mue::fuzz::scratch_dir() / "model.safetensors";
  mue::fuzz::write_file(path, data, size);
  try {
    auto file = mue::SafeTensorsFile::open(path.string());
    mue::WeightStore store(file);
    volatile uint8_t sink = 0;
    for (const std::string& name : file->names()) {
      const auto& entry = file->entry(name);
      mue::Tensor raw = file->get(name);
      const auto* bytes = static_cast<const uint8_t*>(raw.raw());
      // Touch the first and last byte: the range must lie inside the mapping.
      if (entry.nbytes) sink = sink + bytes[0] + bytes[entry.nbytes - 1];
      mue::Tensor widened = store.get(name, entry.shape);
      if (widened.numel()) sink = sink + static_cast<const uint8_t*>(widened.raw())[0];
    }
    try {
      store.check();
    } catch (const mue::Error&) {
    }
  } catch (const mue::Error&) {
  }
  return 0;
}
