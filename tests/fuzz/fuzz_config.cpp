// Fuzzes config.json: any JSON document either loads as a ModelConfig or is refused with
// mue::Error; nothing else may escape.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "mue/config.h"
#include "mue/tensor.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    mue::ModelConfig config = mue::ModelConfig::from_json(j, "config.json");
    (void)config.head_dim();
  } catch (const mue::Error&) {
  }
  return 0;
}
