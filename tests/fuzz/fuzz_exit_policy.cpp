// Fuzzes the exit-policy JSON: a policy either loads (and then validates and survives a round
// trip through to_json) or is refused with mue::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "mue/exit_policy.h"
#include "mue/tensor.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  mue::ExitPolicy policy;
  try {
    policy = mue::ExitPolicy::from_json(j, "policy.json");
  } catch (const mue::Error&) {
    return 0;
  }
  // What loaded is valid, and writing it out and reading it back gives the same policy.
  policy.validate();
  const nlohmann::json out = policy.to_json();
  if (mue::ExitPolicy::from_json(out, "round trip").to_json() != out) std::abort();
  return 0;
}
