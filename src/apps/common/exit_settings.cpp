#include "apps/common/exit_settings.h"

#include <sstream>

namespace mue::apps {

namespace {

using nlohmann::json;
using Kind = ExitSettingKey::Kind;

// "fixed_depth_image" -> "--fixed-depth-image".
std::string flag_of_key(const std::string& key) {
  std::string flag = "--" + key;
  for (char& c : flag)
    if (c == '_') c = '-';
  return flag;
}

// The JSON fields `key` sets from `value`; parse errors start with `label`.
json fields_of(const ExitSettingKey& key, const std::string& value, const std::string& label) {
  switch (key.kind) {
    case Kind::kNumber:
      return {{key.key, parse_double(label, value)}};
    case Kind::kDepth:
      return {{key.key, parse_count(label, value, 0)}};
    case Kind::kName:
      return {{key.key, value}};
    case Kind::kNumbers: {
      // One per layer before the last; '/' everywhere, ',' too on the command line; "none"
      // clears the list (the single threshold applies again).
      json list = json::array();
      if (value == "none") return {{key.key, list}};
      for (const std::string& part : split(value, value.find('/') != std::string::npos ? '/' : ','))
        list.push_back(parse_double(label, part));
      return {{key.key, list}};
    }
    case Kind::kThreeDepths: {
      // '/' works everywhere; ',' where commas do not separate settings (the CLI flag).
      std::vector<std::string> parts =
          split(value, value.find('/') != std::string::npos ? '/' : ',');
      if (parts.size() != 3)
        throw Error(label +
                    " needs three numbers I/T/D or I,T,D (image, text, decoder layers; 0 = " +
                    "off), got \"" + value + "\"");
      return {{"fixed_depth_image", parse_count(label, parts[0], 0)},
              {"fixed_depth_text", parse_count(label, parts[1], 0)},
              {"fixed_depth_decoder", parse_count(label, parts[2], 0)}};
    }
  }
  throw Error("internal: unknown exit setting kind");
}

std::string known_keys() {
  std::string text;
  for (const ExitSettingKey& k : exit_setting_keys()) {
    text += text.empty() ? "" : ", ";
    text += k.key;
    if (*k.alias) text += std::string(" (") + k.alias + ")";
  }
  return text;
}

}  // namespace

const std::vector<ExitSettingKey>& exit_setting_keys() {
  static const std::vector<ExitSettingKey> keys{
      {"exit_threshold_image", "image", "--image-threshold", Kind::kNumber, "X",
       "exit the image stream when cos(out, in) > X; X in (0, 1], 1 = off"},
      {"exit_threshold_text", "text", "--text-threshold", Kind::kNumber, "X",
       "the same for the text stream"},
      {"exit_threshold_decoder", "decoder", "--decoder-threshold", Kind::kNumber, "X",
       "the same for the decoder"},
      {"exit_thresholds_image", "image_layers", "--image-thresholds", Kind::kNumbers, "X/X/..",
       "per-layer image thresholds, one per layer before the last (none = off)"},
      {"exit_thresholds_text", "text_layers", "--text-thresholds", Kind::kNumbers, "X/X/..",
       "the same for the text stream"},
      {"exit_thresholds_decoder", "decoder_layers", "--decoder-thresholds", Kind::kNumbers,
       "X/X/..", "the same for the decoder's cosine"},
      {"decoder_rule", "rule", "--decoder-rule", Kind::kName, "NAME",
       "the decoder's exit test: cosine (MuE) | confidence (the answer's softmax)"},
      {"confidence_threshold", "confidence", "--confidence-threshold", Kind::kNumber, "X",
       "rule confidence: exit when the answer's confidence > X; X in (0, 1]"},
      {"confidence_thresholds", "confidence_layers", "--confidence-thresholds", Kind::kNumbers,
       "X/X/..", "per-layer confidence thresholds (none = off)"},
      {"confidence_measure", "measure", "--confidence-measure", Kind::kName, "NAME",
       "top1 (largest probability) | margin (top-1 minus top-2, CALM's)"},
      {"decoder_schedule", "schedule", "--schedule", Kind::kName, "NAME",
       "decoder threshold schedule: static | decaying | calm"},
      {"calm_beta", "beta", "--calm-beta", Kind::kNumber, "X",
       "the calm schedule's beta, in [0, 1]"},
      {"calm_tau", "tau", "--calm-tau", Kind::kNumber, "X", "the calm schedule's tau, above 0"},
      {"fixed_depth_image", "", "--fixed-depth-image", Kind::kDepth, "N",
       "the image stream stops after N layers (0 = off)"},
      {"fixed_depth_text", "", "--fixed-depth-text", Kind::kDepth, "N",
       "the same for the text stream"},
      {"fixed_depth_decoder", "", "--fixed-depth-decoder", Kind::kDepth, "N",
       "the same for the decoder"},
      {"fixed_depth", "fixed", "--fixed-depth", Kind::kThreeDepths, "I/T/D",
       "all three fixed depths at once"},
      {"skipped_layer_cache", "kv", "--kv-cache", Kind::kName, "NAME",
       "skipped decoder layers' cache: propagate | reference"},
  };
  return keys;
}

const ExitSettingKey* find_exit_setting(const std::string& name) {
  for (const ExitSettingKey& k : exit_setting_keys())
    if (name == k.key || (*k.alias && name == k.alias)) return &k;
  return nullptr;
}

const ExitSettingKey* find_exit_setting_flag(const std::string& flag) {
  for (const ExitSettingKey& k : exit_setting_keys())
    if (flag == k.flag || flag == flag_of_key(k.key)) return &k;
  return nullptr;
}

void apply_exit_setting(json& fields, const ExitSettingKey& key, const std::string& value,
                        const std::string& label) {
  json set = fields_of(key, value, label);
  // Checked alone now (range, names), so that the error names what the user wrote.
  ExitPolicy::from_json(set, label);
  for (auto it = set.begin(); it != set.end(); ++it) fields[it.key()] = it.value();
}

const ExitSettingKey& exit_setting_named(const std::string& name, const std::string& where) {
  const ExitSettingKey* key = find_exit_setting(name);
  if (!key) throw Error(where + ": unknown key \"" + name + "\" (" + known_keys() + ")");
  return *key;
}

void apply_exit_spec(json& fields, const std::string& spec, const std::string& where) {
  for (const std::string& field : split(spec, ',')) {
    size_t colon = field.find(':');
    if (colon == std::string::npos) throw Error(where + ": \"" + field + "\" is not key:value");
    std::string name = field.substr(0, colon);
    apply_exit_setting(fields, exit_setting_named(name, where), field.substr(colon + 1),
                       where + ": " + name);
  }
}

bool ExitSettingFlags::take(const std::string& flag, ArgReader& args) {
  const ExitSettingKey* key = find_exit_setting_flag(flag);
  if (!key) return false;
  std::string value = args.value(flag);
  json check = json::object();
  apply_exit_setting(check, *key, value, flag);
  given_.push_back({key, flag, value});
  return true;
}

ExitPolicy ExitSettingFlags::apply(const ExitPolicy& start) const {
  json fields = start.to_json();
  for (const Given& g : given_) apply_exit_setting(fields, *g.key, g.value, g.flag);
  return ExitPolicy::from_json(fields, "command-line exit policy");
}

namespace {

// Help lines: each name padded to a column, then its text.
std::string help_lines(const std::vector<std::pair<std::string, std::string>>& rows, int indent,
                       int column) {
  std::ostringstream out;
  for (const auto& [name, text] : rows) {
    std::string line = std::string(static_cast<size_t>(indent), ' ') + name + "  ";
    line.resize(std::max(line.size(), static_cast<size_t>(column)), ' ');
    out << line << text << "\n";
  }
  return out.str();
}

}  // namespace

std::string exit_settings_help(int indent, int column) {
  std::vector<std::pair<std::string, std::string>> rows;
  for (const ExitSettingKey& k : exit_setting_keys()) {
    std::string name = std::string(k.key) + (*k.alias ? std::string(" (") + k.alias + ")" : "");
    rows.emplace_back(name + ":" + k.value, k.help);
  }
  return help_lines(rows, indent, column);
}

std::string exit_flags_help(int indent, int column) {
  std::vector<std::pair<std::string, std::string>> rows;
  for (const ExitSettingKey& k : exit_setting_keys()) {
    // Commas do not separate settings on the command line, so I,T,D reads there too.
    std::string value = k.kind == Kind::kThreeDepths ? "I,T,D" : k.value;
    rows.emplace_back(std::string(k.flag) + " " + value, k.help);
  }
  return help_lines(rows, indent, column);
}

}  // namespace mue::apps
