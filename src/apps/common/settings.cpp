#include "apps/common/settings.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "apps/common/options.h"

namespace mue::apps {

using nlohmann::json;

bool same_policy(const ExitPolicy& a, const ExitPolicy& b) { return a.to_json() == b.to_json(); }

bool is_compute_type_key(const std::string& name) {
  return name == "compute" || name == "compute_type";
}

namespace {

ComputeType compute_type_value(const std::string& value, const std::string& where) {
  try {
    return parse_compute_type(value);
  } catch (const Error& e) {
    throw Error(where + ": " + e.what());
  }
}

}  // namespace

Setting parse_setting(const std::string& arg) {
  size_t eq = arg.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size())
    throw Error("--setting needs NAME=POLICY.json or NAME=key:value,..., got \"" + arg + "\"");
  Setting s;
  s.name = arg.substr(0, eq);
  std::string value = arg.substr(eq + 1);
  const std::string where = "--setting " + s.name;
  if (!std::filesystem::exists(value)) {  // take the compute-type pieces out of the spec
    std::string rest;
    for (const std::string& piece : split(value, ',')) {
      size_t colon = piece.find(':');
      if (colon != std::string::npos && is_compute_type_key(piece.substr(0, colon))) {
        if (s.compute_type) throw Error(where + ": the compute type is given twice");
        s.compute_type = compute_type_value(piece.substr(colon + 1), where + ": compute");
      } else {
        rest += (rest.empty() ? "" : ",") + piece;
      }
    }
    if (s.compute_type && rest.empty()) {  // "NAME=compute:TYPE": full depth in that type
      s.policy = ExitPolicy::full_depth();
      return s;
    }
    value = rest;
  }
  if (value.find(':') == std::string::npos || std::filesystem::exists(value)) {
    s.policy = ExitPolicy::load(value);
    return s;
  }
  json fields = json::object();
  apply_exit_spec(fields, value, where);
  s.policy = ExitPolicy::from_json(fields, where);
  return s;
}

std::string setting_help() {
  return R"(  --setting NAME=FILE.json  an exit policy file (as mue-calibrate writes)
  --setting NAME=SPEC       an inline policy: comma-separated KEY:VALUE, KEY a field of the
                            policy file or its short form (in parentheses):
)" + exit_settings_help(4, 40) +
         R"(                            e.g. --setting paper=image:0.9,text:0.95,decoder:0.95
                            or --setting d3=fixed:0/0/3,kv:reference
                            compute (compute_type):f32|bf16|int8|auto runs the setting on an
                            engine loaded in that type (default: --compute-type), e.g.
                            --setting bf16=compute:bf16 or --setting x=FILE.json,compute:int8
  --sweep KEY=V1,V2,...     one axis of a grid (the same keys); several --sweep make the
                            cross product, e.g. --sweep image=0.9,0.95 --sweep text=0.9,1
                            --sweep compute=f32,bf16,int8 compares compute types
)";
}

std::string policy_name(const ExitPolicy& p) {
  ExitPolicy full;
  std::vector<std::string> parts;
  if (p.fixed_depth_image || p.fixed_depth_text || p.fixed_depth_decoder)
    parts.push_back("fixed" + std::to_string(p.fixed_depth_image) + "/" +
                    std::to_string(p.fixed_depth_text) + "/" +
                    std::to_string(p.fixed_depth_decoder));
  if (p.exit_threshold_image != 1.0)
    parts.push_back("image" + short_number(p.exit_threshold_image));
  if (p.exit_threshold_text != 1.0) parts.push_back("text" + short_number(p.exit_threshold_text));
  if (p.exit_threshold_decoder != 1.0)
    parts.push_back("decoder" + short_number(p.exit_threshold_decoder));
  auto per_layer = [&](const char* label, const std::vector<double>& values) {
    std::string part = label;
    for (double v : values) {
      if (part != label) part += '/';
      part += short_number(v);
    }
    if (!values.empty()) parts.push_back(part);
  };
  per_layer("image", p.exit_thresholds_image);
  per_layer("text", p.exit_thresholds_text);
  per_layer("decoder", p.exit_thresholds_decoder);
  if (p.decoder_rule != full.decoder_rule) {
    parts.push_back(std::string(decoder_rule_name(p.decoder_rule)) +
                    (p.confidence_measure != full.confidence_measure
                         ? std::string("-") + confidence_measure_name(p.confidence_measure)
                         : std::string()));
    if (p.confidence_thresholds.empty()) parts.push_back(short_number(p.confidence_threshold));
    per_layer("", p.confidence_thresholds);
  }
  if (p.decoder_schedule != full.decoder_schedule)
    parts.push_back(decoder_schedule_name(p.decoder_schedule));
  if (p.skipped_layer_cache != full.skipped_layer_cache)
    parts.push_back(std::string("kv-") + skipped_layer_cache_name(p.skipped_layer_cache));
  if (p.calm_beta != full.calm_beta) parts.push_back("beta" + short_number(p.calm_beta));
  if (p.calm_tau != full.calm_tau) parts.push_back("tau" + short_number(p.calm_tau));
  if (parts.empty()) return "thresholds1";
  std::string name;
  for (const std::string& part : parts) name += (name.empty() ? "" : "_") + part;
  return name;
}

SweepAxis parse_sweep(const std::string& arg) {
  size_t eq = arg.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size())
    throw Error("--sweep needs KEY=V1,V2,..., got \"" + arg + "\"");
  SweepAxis axis;
  axis.name = arg.substr(0, eq);
  axis.values = split(arg.substr(eq + 1), ',');
  if (is_compute_type_key(axis.name)) {
    for (const std::string& v : axis.values)
      axis.compute_types.push_back(compute_type_value(v, "--sweep " + axis.name));
    return axis;
  }
  axis.key = &exit_setting_named(axis.name, "--sweep");
  return axis;
}

std::vector<Setting> sweep_settings(const std::vector<SweepAxis>& axes) {
  std::vector<Setting> out;
  if (axes.empty()) return out;
  using Point = std::pair<json, std::optional<ComputeType>>;
  std::vector<Point> points{{json::object(), std::nullopt}};
  for (const SweepAxis& axis : axes) {
    std::vector<Point> next;
    for (const Point& point : points)
      for (size_t k = 0; k < axis.values.size(); ++k) {
        Point p = point;
        if (axis.key)
          apply_exit_setting(p.first, *axis.key, axis.values[k], "--sweep " + axis.name);
        else
          p.second = axis.compute_types[k];
        next.push_back(p);
      }
    points = std::move(next);
  }
  for (const auto& [fields, type] : points) {
    ExitPolicy p = ExitPolicy::from_json(fields, "--sweep point " + fields.dump());
    std::string name = policy_name(p);
    if (type) {
      const std::string type_name = compute_type_name(*type);
      name = name == "thresholds1" ? type_name : name + "_" + type_name;
    }
    out.push_back({name, p, type});
  }
  return out;
}

std::vector<Setting> fixed_depth_settings(int encoder_layers, int decoder_layers) {
  std::vector<Setting> out;
  auto add = [&](const char* stack, int depth, int i, int t, int d) {
    ExitPolicy p;
    p.fixed_depth_image = i;
    p.fixed_depth_text = t;
    p.fixed_depth_decoder = d;
    out.push_back({std::string("fixed_") + stack + "_" + std::to_string(depth), p});
  };
  for (int k = 1; k < encoder_layers; ++k) add("image", k, k, 0, 0);
  for (int k = 1; k < encoder_layers; ++k) add("text", k, 0, k, 0);
  for (int k = 1; k < decoder_layers; ++k) add("decoder", k, 0, 0, k);
  return out;
}

std::vector<Setting> with_baseline(const std::vector<Setting>& settings) {
  std::vector<Setting> out{{kBaselineName, ExitPolicy::full_depth()}};
  for (const Setting& s : settings) {
    for (const Setting& earlier : out)
      if (earlier.name == s.name) throw Error("two settings are named \"" + s.name + "\"");
    out.push_back(s);
  }
  return out;
}

}  // namespace mue::apps
