#include "apps/common/settings.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "apps/common/options.h"

namespace mue::apps {

using nlohmann::json;

bool same_policy(const ExitPolicy& a, const ExitPolicy& b) { return a.to_json() == b.to_json(); }

Setting parse_setting(const std::string& arg) {
  size_t eq = arg.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size())
    throw Error("--setting needs NAME=POLICY.json or NAME=key:value,..., got \"" + arg + "\"");
  Setting s;
  s.name = arg.substr(0, eq);
  std::string value = arg.substr(eq + 1);
  if (value.find(':') == std::string::npos || std::filesystem::exists(value)) {
    s.policy = ExitPolicy::load(value);
    return s;
  }
  const std::string where = "--setting " + s.name;
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
  --sweep KEY=V1,V2,...     one axis of a grid (the same keys); several --sweep make the
                            cross product, e.g. --sweep image=0.9,0.95 --sweep text=0.9,1
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
  axis.key = &exit_setting_named(axis.name, "--sweep");
  axis.values = split(arg.substr(eq + 1), ',');
  return axis;
}

std::vector<Setting> sweep_settings(const std::vector<SweepAxis>& axes) {
  std::vector<Setting> out;
  if (axes.empty()) return out;
  std::vector<json> points{json::object()};
  for (const SweepAxis& axis : axes) {
    std::vector<json> next;
    for (const json& point : points)
      for (const std::string& v : axis.values) {
        json p = point;
        apply_exit_setting(p, *axis.key, v, "--sweep " + axis.name);
        next.push_back(p);
      }
    points = std::move(next);
  }
  for (const json& point : points) {
    ExitPolicy p = ExitPolicy::from_json(point, "--sweep point " + point.dump());
    out.push_back({policy_name(p), p});
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
