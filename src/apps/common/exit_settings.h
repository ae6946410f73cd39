// The one grammar for exit settings, shared by the CLI flags of `mue`, mue-bench's inline setting
// specs (--setting NAME=key:value,...) and sweeps (--sweep KEY=V1,V2), and mue-calibrate.
//
// The keys are the exit-policy JSON fields (ExitPolicy::to_json). Each also has a short alias
// for specs and a command-line flag; `--KEY` with dashes for underscores is a flag too:
//
//   key                     alias     flag                   value
//   exit_threshold_image    image     --image-threshold      X in (0, 1]; 1 never exits
//   exit_threshold_text     text      --text-threshold       X in (0, 1]
//   exit_threshold_decoder  decoder   --decoder-threshold    X in (0, 1]
//   exit_thresholds_image   image_layers       --image-thresholds     X/X/.. per layer but the last
//   exit_thresholds_text    text_layers        --text-thresholds      X/X/..; none = off
//   exit_thresholds_decoder decoder_layers     --decoder-thresholds   X/X/..
//   decoder_rule            rule               --decoder-rule         cosine | confidence
//   confidence_threshold    confidence         --confidence-threshold X in (0, 1]
//   confidence_thresholds   confidence_layers  --confidence-thresholds X/X/..
//   confidence_measure      measure            --confidence-measure   top1 | margin
//   decoder_schedule        schedule  --schedule             static | decaying | calm
//   calm_beta               beta      --calm-beta            X in [0, 1]
//   calm_tau                tau       --calm-tau             X > 0
//   fixed_depth_image       -         --fixed-depth-image    layers, 0 = off
//   fixed_depth_text        -         --fixed-depth-text     layers, 0 = off
//   fixed_depth_decoder     -         --fixed-depth-decoder  layers, 0 = off
//   fixed_depth             fixed     --fixed-depth          I/T/D (flag: also I,T,D): all three
//   skipped_layer_cache     kv        --kv-cache             propagate | reference
//
// Each value is checked as it is read, so an error names the flag or key as written and the
// reason; depths beyond the model are checked later, against the model (Engine::check_exit_policy).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/common/options.h"
#include "mue/exit_policy.h"

namespace mue::apps {

struct ExitSettingKey {
  enum class Kind { kNumber, kDepth, kThreeDepths, kName, kNumbers };
  const char* key;    // canonical: the policy JSON field (fixed_depth: all three depths)
  const char* alias;  // the short form in specs, or "" for none
  const char* flag;   // the command-line flag
  Kind kind;
  const char* value;  // the value's placeholder in help texts ("X", "NAME", ...)
  const char* help;
};

// Every key, in the order of the table above.
const std::vector<ExitSettingKey>& exit_setting_keys();

// The key named `name` (canonical or alias); nullptr if none.
const ExitSettingKey* find_exit_setting(const std::string& name);
// The key named `name` (canonical or alias); an unknown name is an error that starts with
// `where` and lists the keys.
const ExitSettingKey& exit_setting_named(const std::string& name, const std::string& where);
// The key whose flag is `flag` (its own flag or --KEY with dashes); nullptr if none.
const ExitSettingKey* find_exit_setting_flag(const std::string& flag);

// Sets `key` to `value` in `fields`, an exit-policy JSON object. `label` is how the user named
// the setting (a flag such as "--decoder-threshold", or "--setting fast: decoder"); errors start
// with it.
void apply_exit_setting(nlohmann::json& fields, const ExitSettingKey& key, const std::string& value,
                        const std::string& label);

// An inline spec, comma-separated key:value, applied to `fields`; `where` names it in errors.
void apply_exit_spec(nlohmann::json& fields, const std::string& spec, const std::string& where);

// Exit-setting flags in command-line order, applied over a starting policy (a policy file's).
class ExitSettingFlags {
 public:
  // Takes `flag` and its value from `args` if it is an exit-setting flag; the value is checked
  // now.
  bool take(const std::string& flag, ArgReader& args);
  ExitPolicy apply(const ExitPolicy& start) const;

 private:
  struct Given {
    const ExitSettingKey* key;
    std::string flag, value;
  };
  std::vector<Given> given_;
};

// Help texts from the table: for specs ("key (alias):VALUE  what it does") and for flags
// ("--flag VALUE  what it does"), indented by `indent`, the texts starting at `column`.
std::string exit_settings_help(int indent, int column);
std::string exit_flags_help(int indent, int column);

}  // namespace mue::apps
