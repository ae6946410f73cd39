// The exit settings a bench run compares: named policies from files or inline specs, sweeps
// (the cross product of --sweep axes), the fixed-depth grid, and full depth as the baseline.
// Inline specs and sweeps use the keys of exit_settings.h.
#pragma once

#include <string>
#include <vector>

#include "apps/common/exit_settings.h"
#include "mue/exit_policy.h"

namespace mue::apps {

struct Setting {
  std::string name;
  ExitPolicy policy;
};

inline constexpr const char* kBaselineName = "full_depth";

bool same_policy(const ExitPolicy& a, const ExitPolicy& b);

// "NAME=FILE.json" (an exit-policy file) or "NAME=key:value,..." (an inline spec).
Setting parse_setting(const std::string& arg);

// The --setting and --sweep help, with the keys and their aliases.
std::string setting_help();

// A setting's name from the values it sets, e.g. "image0.9_text0.95".
std::string policy_name(const ExitPolicy& p);

// --sweep KEY=V1,V2,...: one axis; the key is checked now, the values when the grid is built.
struct SweepAxis {
  const ExitSettingKey* key = nullptr;
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
