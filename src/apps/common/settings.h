// The exit settings a bench run compares: named policies from files or inline specs, sweeps
// (the cross product of --sweep axes), the fixed-depth grid, and full depth as the baseline.
// Inline specs and sweeps use the keys of exit_settings.h, plus `compute` (alias
// `compute_type`): the setting runs on an engine loaded in that compute type (mue/compute_type.h),
// so one run can compare f32, bf16 and int8 interleaved.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "apps/common/exit_settings.h"
#include "mue/compute_type.h"
#include "mue/exit_policy.h"

namespace mue::apps {

struct Setting {
  std::string name;
  ExitPolicy policy;
  std::optional<ComputeType> compute_type = std::nullopt;  // unset: the engine of --compute-type
};

inline constexpr const char* kBaselineName = "full_depth";

bool same_policy(const ExitPolicy& a, const ExitPolicy& b);

// "NAME=FILE.json" (an exit-policy file), "NAME=key:value,..." (an inline spec), either with
// ",compute:TYPE" added ("NAME=FILE.json,compute:bf16"), or "NAME=compute:TYPE" alone (full depth
// in that type).
Setting parse_setting(const std::string& arg);

// The --setting and --sweep help, with the keys and their aliases.
std::string setting_help();

// A setting's name from the values it sets, e.g. "image0.9_text0.95".
std::string policy_name(const ExitPolicy& p);

// Whether `name` is the compute-type key of settings and sweeps ("compute", "compute_type").
bool is_compute_type_key(const std::string& name);

// --sweep KEY=V1,V2,...: one axis; the key is checked now, the values when the grid is built
// (compute types: now).
struct SweepAxis {
  const ExitSettingKey* key = nullptr;  // nullptr: the compute-type axis
  std::vector<ComputeType> compute_types;
  std::string name;  // as written
  std::vector<std::string> values;
};
SweepAxis parse_sweep(const std::string& arg);
// The cross product of every axis, each point a setting named after its values.
std::vector<Setting> sweep_settings(const std::vector<SweepAxis>& axes);

// Every fixed depth below full, one stack at a time (the others at full depth): the
// quality-at-every-depth ablation.
std::vector<Setting> fixed_depth_settings(int encoder_layers, int decoder_layers);

// Full depth first, then the others in order; names must be unique.
std::vector<Setting> with_baseline(const std::vector<Setting>& settings);

}  // namespace mue::apps
