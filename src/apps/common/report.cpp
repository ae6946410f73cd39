#include "apps/common/report.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "tasks/metrics.h"

namespace mue::apps {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Nearest-rank percentile (q in [0, 1]) of a non-empty list.
double percentile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(values.size())));
  return values[std::clamp<size_t>(rank, 1, values.size()) - 1];
}

const SettingRun& baseline_run(const RunResult& result) {
  for (const SettingRun& r : result.runs)
    if (r.setting.name == kBaselineName) return r;
  throw Error("internal: the runs have no full-depth baseline");
}

}  // namespace

const std::vector<std::string>& quality_metric_names(Task task) {
  static const std::vector<std::string> ve{"accuracy"};
  static const std::vector<std::string> caption{"bleu1", "bleu2",   "bleu3",
                                                "bleu4", "cider_d", "rouge_l"};
  return task == Task::kVe ? ve : caption;
}

std::string default_quality_metric(Task task) { return task == Task::kVe ? "accuracy" : "cider_d"; }

void check_quality_metric(Task task, const std::string& metric) {
  const auto& names = quality_metric_names(task);
  if (std::find(names.begin(), names.end(), metric) == names.end()) {
    std::string known;
    for (const auto& m : names) known += (known.empty() ? "" : ", ") + m;
    throw Error("--metric " + metric + " is not a " + task_name(task) + " metric (" + known + ")");
  }
}

std::map<std::string, double> quality_metrics(const BenchDump& dump, const RunResult& result,
                                              const SettingRun& run) {
  std::map<std::string, double> m;
  if (dump.task == Task::kVe) {
    size_t correct = 0, total = 0;
    for (size_t i = 0; i < dump.samples.size(); ++i) {
      if (!result.scored[i]) continue;
      ++total;
      correct += run.outcomes[i]->prediction == ve_label_name(dump.samples[i].label);
    }
    m["accuracy"] = total ? static_cast<double>(correct) / static_cast<double>(total) : 0.0;
    return m;
  }
  std::vector<std::string> candidates;
  std::vector<std::vector<std::string>> references;
  for (size_t i = 0; i < dump.samples.size(); ++i) {
    if (!result.scored[i]) continue;
    candidates.push_back(run.outcomes[i]->prediction);
    references.push_back(dump.samples[i].references);
  }
  if (candidates.empty())
    return {{"bleu1", 0}, {"bleu2", 0}, {"bleu3", 0}, {"bleu4", 0}, {"cider_d", 0}, {"rouge_l", 0}};
  CaptionScores scores = score_captions(candidates, references);
  for (int k = 0; k < 4; ++k) m["bleu" + std::to_string(k + 1)] = scores.bleu[k];
  m["cider_d"] = scores.cider_d;
  m["rouge_l"] = scores.rouge_l;
  return m;
}

json summarize_settings(const BenchDump& dump, const RunResult& result, const ModelConfig& config,
                        const SummaryOptions& options) {
  const int encoder_depth = config.encoder_layers, decoder_depth = config.decoder_layers;
  const SettingRun& base = baseline_run(result);
  std::map<std::string, double> base_metrics = quality_metrics(dump, result, base);
  std::vector<size_t> scored;
  for (size_t i = 0; i < dump.samples.size(); ++i)
    if (result.scored[i]) scored.push_back(i);
  auto mean_seconds = [&](const SettingRun& run) {
    double sum = 0;
    for (size_t i : scored) sum += run.outcomes[i]->seconds;
    return scored.empty() ? 0.0 : sum / static_cast<double>(scored.size());
  };
  const double base_seconds = mean_seconds(base);

  json out = json::array();
  for (const SettingRun& run : result.runs) {
    json s;
    s["name"] = run.setting.name;
    s["is_baseline"] = run.setting.name == kBaselineName;
    s["policy"] = run.setting.policy.to_json();
    s["samples"] = scored.size();

    std::map<std::string, double> metrics = quality_metrics(dump, result, run);
    json retention = json::object();
    for (const auto& [name, value] : metrics)
      retention[name] = base_metrics[name] > 0 ? json(value / base_metrics[name]) : json(nullptr);
    s["metrics"] = metrics;
    s["retention"] = retention;
    s["quality"] = {{"metric", options.quality_metric},
                    {"value", metrics.at(options.quality_metric)},
                    {"full_depth", base_metrics.at(options.quality_metric)},
                    {"retention", retention[options.quality_metric]}};

    // Exit layers: histograms (index k = k+1 layers), stream means, spec 1.6's reduction with
    // n_E the mean of both streams and n_D averaged over every generated token of the dump.
    std::vector<size_t> image_hist(static_cast<size_t>(encoder_depth)),
        text_hist(static_cast<size_t>(encoder_depth)),
        decoder_hist(static_cast<size_t>(decoder_depth));
    auto count = [&](std::vector<size_t>& hist, int layers, const char* stack, size_t i) {
      if (layers < 1 || layers > static_cast<int>(hist.size()))
        throw Error("setting " + run.setting.name + ", sample " + dump.samples[i].id + ": " +
                    stack + " used " + std::to_string(layers) + " layers, outside 1.." +
                    std::to_string(hist.size()));
      ++hist[static_cast<size_t>(layers - 1)];
    };
    double image_sum = 0, text_sum = 0, decoder_sum = 0, per_sample_reduction = 0;
    size_t decoder_count = 0, agree = 0, reused = 0;
    std::vector<double> seconds;
    StageSeconds stages;
    json per_sample = json::array();
    for (size_t i : scored) {
      const Outcome& o = *run.outcomes[i];
      count(image_hist, o.exits.image_layers, "the image stream", i);
      count(text_hist, o.exits.text_layers, "the text stream", i);
      for (int l : o.exits.decoder_layers) count(decoder_hist, l, "the decoder", i);
      image_sum += o.exits.image_layers;
      text_sum += o.exits.text_layers;
      for (int l : o.exits.decoder_layers) decoder_sum += l;
      decoder_count += o.exits.decoder_layers.size();
      per_sample_reduction += o.exits.expected_time_reduction();
      agree += o.prediction == base.outcomes[i]->prediction;
      reused += o.exits.image_reused;
      seconds.push_back(o.seconds);
      stages.resnet += o.stages.resnet;
      stages.image_stream += o.stages.image_stream;
      stages.text_stream += o.stages.text_stream;
      stages.decoder += o.stages.decoder;
      if (options.per_sample) {
        json r = {{"id", dump.samples[i].id},
                  {"line", dump.samples[i].line},
                  {"prediction", o.prediction},
                  {"layers",
                   {{"image", o.exits.image_layers},
                    {"text", o.exits.text_layers},
                    {"decoder", o.exits.decoder_layers}}},
                  {"image_reused", o.exits.image_reused},
                  {"ms", 1000 * o.seconds}};
        if (dump.task == Task::kVe) {
          r["probabilities"] = {{"entailment", o.probabilities[0]},
                                {"neutral", o.probabilities[1]},
                                {"contradiction", o.probabilities[2]}};
          r["correct"] = o.prediction == ve_label_name(dump.samples[i].label);
        }
        per_sample.push_back(std::move(r));
      }
    }
    const double n = std::max<double>(1.0, static_cast<double>(scored.size()));
    const double mean_image = image_sum / n, mean_text = text_sum / n;
    const double mean_decoder =
        decoder_count ? decoder_sum / static_cast<double>(decoder_count) : 0.0;
    s["agreement_with_full_depth"] = static_cast<double>(agree) / n;
    s["mean_layers"] = {{"image", mean_image}, {"text", mean_text}, {"decoder", mean_decoder}};
    s["expected_time_reduction"] =
        1.0 - (0.5 * (mean_image + mean_text) + mean_decoder) / (encoder_depth + decoder_depth);
    s["expected_time_reduction_per_sample_mean"] = per_sample_reduction / n;
    s["exit_histograms"] = {{"image", image_hist}, {"text", text_hist}, {"decoder", decoder_hist}};
    s["decoder_exits"] = decoder_count;  // generated tokens (captioning) or samples (VE)

    json time = json::object();
    if (!seconds.empty()) {
      double mean = mean_seconds(run);
      time = {{"mean_ms", 1000 * mean},
              {"p50_ms", 1000 * percentile(seconds, 0.5)},
              {"p95_ms", 1000 * percentile(seconds, 0.95)},
              {"measured_time_reduction", base_seconds > 0 ? 1.0 - mean / base_seconds : 0.0},
              {"stages_mean_ms",
               {{"resnet", 1000 * stages.resnet / n},
                {"image_stream", 1000 * stages.image_stream / n},
                {"text_stream", 1000 * stages.text_stream / n},
                {"decoder", 1000 * stages.decoder / n}}}};
    }
    s["time"] = time;
    s["image_reuse"] = {{"reused_samples", reused},
                        {"reused_fraction", static_cast<double>(reused) / n},
                        {"cache_hits", run.cache_hits}};
    if (options.per_sample) s["per_sample"] = std::move(per_sample);
    out.push_back(std::move(s));
  }
  return out;
}

json dump_summary(const BenchDump& dump, const RunResult& result) {
  json bad = json::array();
  std::vector<BadSample> all = dump.bad;
  all.insert(all.end(), result.bad.begin(), result.bad.end());
  std::sort(all.begin(), all.end(),
            [](const BadSample& a, const BadSample& b) { return a.line < b.line; });
  std::map<std::string, size_t> by_kind;
  for (const BadSample& b : all) {
    bad.push_back(b.to_json());
    ++by_kind[b.kind];
  }
  size_t scored = static_cast<size_t>(std::count(result.scored.begin(), result.scored.end(), true));
  return {{"dir", dump.dir.string()},
          {"task", task_name(dump.task)},
          {"manifest_entries", dump.manifest_entries},
          {"scored", scored},
          {"bad", all.size()},
          {"bad_by_kind", by_kind},
          {"bad_samples", bad},
          {"distinct_images", result.distinct_images},
          {"preprocess_ms_mean_per_image",
           result.distinct_images
               ? 1000 * result.preprocess_seconds / static_cast<double>(result.distinct_images)
               : 0.0}};
}

void report_bad_samples(const json& dump_json, const std::string& tool) {
  size_t bad = dump_json["bad"].get<size_t>();
  if (bad == 0) return;
  std::string kinds;
  for (const auto& [kind, count] : dump_json["bad_by_kind"].items())
    kinds += (kinds.empty() ? "" : ", ") + std::to_string(count.get<size_t>()) + " " + kind;
  std::cerr << tool << ": " << bad << " bad sample" << (bad == 1 ? "" : "s") << " in "
            << dump_json["dir"].get<std::string>() << " (" << kinds
            << "), excluded from every setting's scores:\n";
  for (const json& b : dump_json["bad_samples"])
    std::cerr << "  " << b["message"].get<std::string>() << "\n";
}

json model_summary(const std::string& dir, const ModelConfig& c) {
  return {{"dir", dir},
          {"name", c.name},
          {"encoder_mode", encoder_mode_name(c.encoder_mode)},
          {"encoder_layers", c.encoder_layers},
          {"decoder_layers", c.decoder_layers},
          {"d_model", c.d_model},
          {"image_size", {c.image_height, c.image_width}}};
}

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

std::string percent_or_na(const json& v, int digits) {
  return v.is_number() ? fixed(100 * v.get<double>(), digits) + "%" : "n/a";
}

std::string metric_label(const std::string& metric) {
  static const std::map<std::string, std::string> labels{
      {"accuracy", "acc%"}, {"bleu1", "B1"},        {"bleu2", "B2"},       {"bleu3", "B3"},
      {"bleu4", "B4"},      {"cider_d", "CIDEr-D"}, {"rouge_l", "ROUGE-L"}};
  auto it = labels.find(metric);
  return it == labels.end() ? metric : it->second;
}

void print_table(std::ostream& out, const json& settings, Task task,
                 const std::string& quality_metric) {
  size_t name_width = 8;
  for (const json& s : settings)
    name_width = std::max(name_width, s["name"].get<std::string>().size());
  auto cell = [&](const std::string& text, int width) {
    std::ostringstream c;
    c << std::setw(width) << text;
    return c.str();
  };
  std::ostringstream head;
  head << std::left << std::setw(static_cast<int>(name_width)) << "setting" << std::right;
  for (const std::string& m : quality_metric_names(task)) head << cell(metric_label(m), 9);
  head << cell("retain", 8) << cell("agree", 8) << cell("exp.red", 9) << cell("ms/sample", 11)
       << cell("p50", 9) << cell("p95", 9) << cell("meas.red", 10) << cell("layers i/t/d", 17)
       << cell("reuse", 7);
  out << head.str() << "\n" << std::string(head.str().size(), '-') << "\n";
  for (const json& s : settings) {
    out << std::left << std::setw(static_cast<int>(name_width)) << s["name"].get<std::string>()
        << std::right;
    for (const std::string& m : quality_metric_names(task))
      out << cell(fixed(100 * s["metrics"][m].get<double>(), 1), 9);
    const json& r = s["quality"]["retention"];
    out << cell(r.is_number() ? fixed(r.get<double>(), 3) : "n/a", 8)
        << cell(percent_or_na(s["agreement_with_full_depth"], 0), 8)
        << cell(percent_or_na(s["expected_time_reduction"]), 9);
    const json& t = s["time"];
    if (t.contains("mean_ms")) {
      out << cell(fixed(t["mean_ms"].get<double>(), 1), 11)
          << cell(fixed(t["p50_ms"].get<double>(), 1), 9)
          << cell(fixed(t["p95_ms"].get<double>(), 1), 9)
          << cell(percent_or_na(t["measured_time_reduction"]), 10);
    } else {
      out << cell("-", 11) << cell("-", 9) << cell("-", 9) << cell("-", 10);
    }
    const json& l = s["mean_layers"];
    out << cell(fixed(l["image"].get<double>(), 2) + "/" + fixed(l["text"].get<double>(), 2) + "/" +
                    fixed(l["decoder"].get<double>(), 2),
                17)
        << cell(percent_or_na(s["image_reuse"]["reused_fraction"], 0), 7) << "\n";
  }
  out << "quality metric: " << quality_metric
      << " (retain = its ratio to full depth); metrics x100; exp.red = spec 1.6's expected time "
         "reduction from layer counts; meas.red = measured wall-clock reduction against full "
         "depth; reuse = samples whose image stream came from the cache\n";
  out << "exit layers (samples per layer 1..N; decoder: per generated token for captioning):\n";
  for (const json& s : settings) {
    auto hist = [](const json& h) {
      std::string text = "[";
      for (const json& c : h) {
        if (text.size() > 1) text += ' ';
        text += std::to_string(c.get<size_t>());
      }
      return text + ']';
    };
    out << "  " << std::left << std::setw(static_cast<int>(name_width))
        << s["name"].get<std::string>() << std::right << "  image "
        << hist(s["exit_histograms"]["image"]) << "  text " << hist(s["exit_histograms"]["text"])
        << "  decoder " << hist(s["exit_histograms"]["decoder"]) << "\n";
  }
}

void write_json(const fs::path& path, const json& j) {
  std::ofstream out(path);
  if (!out) throw Error("cannot write " + path.string());
  out << j.dump(2) << "\n";
  if (!out) throw Error("error writing " + path.string());
}

}  // namespace mue::apps
