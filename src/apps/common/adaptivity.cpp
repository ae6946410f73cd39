#include "apps/common/adaptivity.h"

#include <cmath>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "mue/tensor.h"

namespace mue::apps {

namespace {

using nlohmann::json;

// Depths of one stream: count, sum, sum of squares, histogram.
struct Depths {
  size_t count = 0;
  double sum = 0, sum_sq = 0;
  std::map<int, size_t> histogram;
  void add(int depth) {
    ++count;
    sum += depth;
    sum_sq += static_cast<double>(depth) * depth;
    ++histogram[depth];
  }
  double mean() const { return count ? sum / static_cast<double>(count) : std::nan(""); }
  double stddev() const {
    if (!count) return std::nan("");
    double m = mean();
    return std::sqrt(std::max(0.0, sum_sq / static_cast<double>(count) - m * m));
  }
};

json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// Mean depths of a set of samples, per stream.
struct Bucket {
  Depths image, text, decoder;
  size_t samples = 0;
  void add(const ExitStatistics& e) {
    ++samples;
    image.add(e.image_layers);
    text.add(e.text_layers);
    for (int d : e.decoder_layers) decoder.add(d);
  }
  json to_json() const {
    return {{"count", samples},
            {"image", number_or_null(image.mean())},
            {"text", number_or_null(text.mean())},
            {"decoder", number_or_null(decoder.mean())}};
  }
};

std::string field_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

}  // namespace

std::vector<std::map<std::string, std::string>> manifest_fields(
    const BenchDump& dump, const std::vector<std::string>& names) {
  std::vector<std::map<std::string, std::string>> out(dump.samples.size());
  if (names.empty() || dump.samples.empty()) return out;
  const std::filesystem::path manifest = dump.dir / "manifest.jsonl";
  std::ifstream in(manifest);
  if (!in) throw Error("--group-by: cannot read " + manifest.string());
  std::map<int, json> by_line;
  std::string text;
  for (int line = 1; std::getline(in, text); ++line) {
    json j = json::parse(text, nullptr, false);
    if (j.is_object()) by_line[line] = std::move(j);
  }
  bool any = false;
  for (size_t i = 0; i < dump.samples.size(); ++i) {
    auto it = by_line.find(dump.samples[i].line);
    if (it == by_line.end()) continue;
    for (const std::string& name : names)
      if (it->second.contains(name)) {
        out[i][name] = field_text(it->second[name]);
        any = true;
      }
  }
  if (!any) {
    std::string list;
    for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
    throw Error("--group-by: no sample of " + manifest.string() + " has the field(s) " + list);
  }
  return out;
}

json adaptivity_json(const BenchDump& dump, const RunResult& result,
                     const std::vector<std::string>& group_by) {
  const auto fields = manifest_fields(dump, group_by);
  // The full-depth run, if any: its answers split the samples into easy and hard ones.
  const SettingRun* full = nullptr;
  for (const SettingRun& run : result.runs)
    if (same_policy(run.setting.policy, ExitPolicy::full_depth()) && !run.setting.compute_type)
      full = &run;
  const bool ve = dump.task == Task::kVe;
  auto right = [&](size_t i, const Outcome& o) {
    return o.prediction == ve_label_name(dump.samples[i].label);
  };
  json out = json::array();
  for (const SettingRun& run : result.runs) {
    Depths image, text, decoder;
    std::map<std::string, std::map<std::string, Bucket>> groups;
    std::map<std::string, Bucket> answers, full_answers;
    for (size_t i = 0; i < run.outcomes.size(); ++i) {
      if (!result.scored[i] || !run.outcomes[i]) continue;
      const Outcome& o = *run.outcomes[i];
      image.add(o.exits.image_layers);
      text.add(o.exits.text_layers);
      for (int d : o.exits.decoder_layers) decoder.add(d);
      for (const auto& [name, value] : fields[i]) groups[name][value].add(o.exits);
      if (ve) {
        answers[right(i, o) ? "right" : "wrong"].add(o.exits);
        if (full && full->outcomes[i])
          full_answers[right(i, *full->outcomes[i]) ? "right" : "wrong"].add(o.exits);
      }
    }
    json streams = json::object();
    for (auto [name, depths] :
         {std::pair{"image", &image}, std::pair{"text", &text}, std::pair{"decoder", &decoder}}) {
      json hist = json::object();
      for (auto [d, n] : depths->histogram) hist[std::to_string(d)] = n;
      streams[name] = {{"unit", std::string(name) == "decoder" && !ve ? "token" : "sample"},
                       {"count", depths->count},
                       {"mean", number_or_null(depths->mean())},
                       {"std", number_or_null(depths->stddev())},
                       {"histogram", hist}};
    }
    json g = json::object();
    for (const auto& [name, buckets] : groups)
      for (const auto& [value, bucket] : buckets) g[name][value] = bucket.to_json();
    json entry = {{"name", run.setting.name}, {"streams", streams}, {"groups", g}};
    if (ve) {
      json a = json::object(), f = json::object();
      for (const auto& [k, b] : answers) a[k] = b.to_json();
      for (const auto& [k, b] : full_answers) f[k] = b.to_json();
      entry["answers"] = a;
      if (full) entry["full_depth_answers"] = f;
    }
    out.push_back(entry);
  }
  return out;
}

namespace {

std::string depth_text(const json& v) {
  if (!v.is_number()) return "n/a";
  std::ostringstream s;
  s << std::fixed << std::setprecision(2) << v.get<double>();
  return s.str();
}

}  // namespace

void print_adaptivity(std::ostream& out, const json& adaptivity) {
  out << "\nadaptivity: exit depth per stream (mean +- std; histogram depth:count), per bucket "
         "(mean image/text/decoder)\n";
  for (const json& s : adaptivity) {
    out << "  " << s["name"].get<std::string>() << "\n";
    for (const char* stream : {"image", "text", "decoder"}) {
      const json& d = s["streams"][stream];
      out << "    " << stream << (d["unit"] == "token" ? " (per token)" : "") << ": "
          << depth_text(d["mean"]) << " +- " << depth_text(d["std"]) << "  [";
      bool first = true;
      for (auto it = d["histogram"].begin(); it != d["histogram"].end(); ++it) {
        out << (first ? "" : " ") << it.key() << ":" << it.value();
        first = false;
      }
      out << "]\n";
    }
    auto bucket_line = [&](const std::string& label, const json& b) {
      out << "      " << label << " (" << b["count"] << "): " << depth_text(b["image"]) << " / "
          << depth_text(b["text"]) << " / " << depth_text(b["decoder"]) << "\n";
    };
    for (auto g = s["groups"].begin(); g != s["groups"].end(); ++g) {
      out << "    by " << g.key() << ":\n";
      for (auto v = g.value().begin(); v != g.value().end(); ++v) bucket_line(v.key(), v.value());
    }
    if (s.contains("answers")) {
      out << "    by answer:\n";
      for (auto v = s["answers"].begin(); v != s["answers"].end(); ++v)
        bucket_line(v.key(), v.value());
    }
    if (s.contains("full_depth_answers")) {
      out << "    by the full-depth answer:\n";
      for (auto v = s["full_depth_answers"].begin(); v != s["full_depth_answers"].end(); ++v)
        bucket_line(v.key(), v.value());
    }
  }
}

}  // namespace mue::apps
