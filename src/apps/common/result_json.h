// The JSON of one call's result as `mue --json` prints it and mue-server answers it: the result's
// own fields (CaptionResult / EntailmentResult::to_json) and the exit policy it ran under.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "mue/exit_policy.h"

namespace mue::apps {

// Adds "policy" (the policy's fields) and "policy_file" (the file it came from; null when it
// came from no file: full depth by default, or a server request's own fields).
inline void add_policy_fields(nlohmann::json& out, const std::string& policy_file,
                              const ExitPolicy& policy) {
  out["policy_file"] = policy_file.empty() ? nlohmann::json(nullptr) : nlohmann::json(policy_file);
  out["policy"] = policy.to_json();
}

}  // namespace mue::apps
