#include "model/exit_controller.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "mue/tensor.h"

namespace mue {

const char* decoder_schedule_name(DecoderSchedule s) {
  switch (s) {
    case DecoderSchedule::kStatic:
      return "static";
    case DecoderSchedule::kDecaying:
      return "decaying";
    case DecoderSchedule::kCalm:
      return "calm";
  }
  return "?";
}

const char* decoder_rule_name(DecoderRule r) {
  return r == DecoderRule::kCosine ? "cosine" : "confidence";
}

const char* confidence_measure_name(ConfidenceMeasure m) {
  return m == ConfidenceMeasure::kTop1 ? "top1" : "margin";
}

const char* skipped_layer_cache_name(SkippedLayerCache c) {
  return c == SkippedLayerCache::kPropagate ? "propagate" : "reference";
}

void ExitPolicy::validate() const {
  auto check_threshold = [](double v, const char* name) {
    if (!(v > 0.0 && v <= 1.0))
      throw Error(std::string("exit policy: ") + name + " = " + std::to_string(v) +
                  " is outside (0, 1]");
  };
  check_threshold(exit_threshold_image, "exit_threshold_image");
  check_threshold(exit_threshold_text, "exit_threshold_text");
  check_threshold(exit_threshold_decoder, "exit_threshold_decoder");
  check_threshold(confidence_threshold, "confidence_threshold");
  for (auto [list, name] : {std::pair{&exit_thresholds_image, "exit_thresholds_image"},
                            std::pair{&exit_thresholds_text, "exit_thresholds_text"},
                            std::pair{&exit_thresholds_decoder, "exit_thresholds_decoder"},
                            std::pair{&confidence_thresholds, "confidence_thresholds"}})
    for (size_t i = 0; i < list->size(); ++i) {
      double v = (*list)[i];
      if (!(v > 0.0 && v <= 1.0))
        throw Error(std::string("exit policy: ") + name + "[" + std::to_string(i) +
                    "] (after layer " + std::to_string(i + 1) + ") = " + std::to_string(v) +
                    " is outside (0, 1]");
    }
  if (!(calm_beta >= 0.0 && calm_beta <= 1.0))
    throw Error("exit policy: calm_beta = " + std::to_string(calm_beta) + " is outside [0, 1]");
  if (!(calm_tau > 0.0))
    throw Error("exit policy: calm_tau = " + std::to_string(calm_tau) + " must be positive");
  for (auto [v, name] : {std::pair{fixed_depth_image, "fixed_depth_image"},
                         std::pair{fixed_depth_text, "fixed_depth_text"},
                         std::pair{fixed_depth_decoder, "fixed_depth_decoder"}})
    if (v < 0)
      throw Error(std::string("exit policy: ") + name + " = " + std::to_string(v) +
                  " is negative (0 means off)");
}

ExitPolicy ExitPolicy::from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": not a JSON object");
  static const char* known[] = {"exit_threshold_image",
                                "exit_threshold_text",
                                "exit_threshold_decoder",
                                "exit_thresholds_image",
                                "exit_thresholds_text",
                                "exit_thresholds_decoder",
                                "decoder_rule",
                                "confidence_threshold",
                                "confidence_thresholds",
                                "confidence_measure",
                                "decoder_schedule",
                                "calm_beta",
                                "calm_tau",
                                "fixed_depth_image",
                                "fixed_depth_text",
                                "fixed_depth_decoder",
                                "skipped_layer_cache",
                                "comment",
                                "calibration"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (std::find_if(std::begin(known), std::end(known),
                     [&](const char* k) { return it.key() == k; }) == std::end(known))
      throw Error(source + ": unknown field \"" + it.key() + "\"");
  ExitPolicy p;
  auto number = [&](const char* key, double& out) {
    if (!j.contains(key)) return;
    if (!j[key].is_number()) throw Error(source + ": field \"" + key + "\" must be a number");
    out = j[key].get<double>();
  };
  auto integer = [&](const char* key, int& out) {
    if (!j.contains(key)) return;
    if (!j[key].is_number_integer())
      throw Error(source + ": field \"" + key + "\" must be an integer");
    out = j[key].get<int>();
  };
  number("exit_threshold_image", p.exit_threshold_image);
  number("exit_threshold_text", p.exit_threshold_text);
  number("exit_threshold_decoder", p.exit_threshold_decoder);
  number("confidence_threshold", p.confidence_threshold);
  auto numbers = [&](const char* key, std::vector<double>& out) {
    if (!j.contains(key)) return;
    const nlohmann::json& v = j[key];
    if (!v.is_array())
      throw Error(source + ": field \"" + key + "\" must be an array of numbers (one per layer " +
                  "before the last), got " + v.dump());
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_number())
        throw Error(source + ": field \"" + key + "\"[" + std::to_string(i) +
                    "] must be a number, got " + v[i].dump());
      out.push_back(v[i].get<double>());
    }
  };
  numbers("exit_thresholds_image", p.exit_thresholds_image);
  numbers("exit_thresholds_text", p.exit_thresholds_text);
  numbers("exit_thresholds_decoder", p.exit_thresholds_decoder);
  numbers("confidence_thresholds", p.confidence_thresholds);
  number("calm_beta", p.calm_beta);
  number("calm_tau", p.calm_tau);
  integer("fixed_depth_image", p.fixed_depth_image);
  integer("fixed_depth_text", p.fixed_depth_text);
  integer("fixed_depth_decoder", p.fixed_depth_decoder);
  if (j.contains("decoder_schedule")) {
    std::string s =
        j["decoder_schedule"].is_string() ? j["decoder_schedule"].get<std::string>() : "";
    if (s == "static")
      p.decoder_schedule = DecoderSchedule::kStatic;
    else if (s == "decaying")
      p.decoder_schedule = DecoderSchedule::kDecaying;
    else if (s == "calm")
      p.decoder_schedule = DecoderSchedule::kCalm;
    else
      throw Error(source + ": decoder_schedule must be \"static\", \"decaying\" or \"calm\", got " +
                  j["decoder_schedule"].dump());
  }
  auto name = [&](const char* key, auto& out, auto to_name, auto... choices) {
    if (!j.contains(key)) return;
    std::string s = j[key].is_string() ? j[key].get<std::string>() : "";
    std::string known;
    for (auto c : {choices...}) {
      if (s == to_name(c)) {
        out = c;
        return;
      }
      known += (known.empty() ? "\"" : ", \"") + std::string(to_name(c)) + "\"";
    }
    throw Error(source + ": " + key + " must be one of " + known + ", got " + j[key].dump());
  };
  name("decoder_rule", p.decoder_rule, decoder_rule_name, DecoderRule::kCosine,
       DecoderRule::kConfidence);
  name("confidence_measure", p.confidence_measure, confidence_measure_name,
       ConfidenceMeasure::kTop1, ConfidenceMeasure::kMargin);
  if (j.contains("skipped_layer_cache")) {
    std::string s =
        j["skipped_layer_cache"].is_string() ? j["skipped_layer_cache"].get<std::string>() : "";
    if (s == "propagate")
      p.skipped_layer_cache = SkippedLayerCache::kPropagate;
    else if (s == "reference")
      p.skipped_layer_cache = SkippedLayerCache::kReference;
    else
      throw Error(source + ": skipped_layer_cache must be \"propagate\" or \"reference\", got " +
                  j["skipped_layer_cache"].dump());
  }
  try {
    p.validate();
  } catch (const Error& e) {
    throw Error(source + ": " + e.what());
  }
  return p;
}

ExitPolicy ExitPolicy::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("exit policy file " + path + ": cannot open");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw Error("exit policy file " + path + ": not valid JSON: " + e.what());
  }
  return from_json(j, "exit policy file " + path);
}

nlohmann::json ExitPolicy::to_json() const {
  return {{"exit_threshold_image", exit_threshold_image},
          {"exit_threshold_text", exit_threshold_text},
          {"exit_threshold_decoder", exit_threshold_decoder},
          {"exit_thresholds_image", exit_thresholds_image},
          {"exit_thresholds_text", exit_thresholds_text},
          {"exit_thresholds_decoder", exit_thresholds_decoder},
          {"decoder_rule", decoder_rule_name(decoder_rule)},
          {"confidence_threshold", confidence_threshold},
          {"confidence_thresholds", confidence_thresholds},
          {"confidence_measure", confidence_measure_name(confidence_measure)},
          {"decoder_schedule", decoder_schedule_name(decoder_schedule)},
          {"calm_beta", calm_beta},
          {"calm_tau", calm_tau},
          {"fixed_depth_image", fixed_depth_image},
          {"fixed_depth_text", fixed_depth_text},
          {"fixed_depth_decoder", fixed_depth_decoder},
          {"skipped_layer_cache", skipped_layer_cache_name(skipped_layer_cache)}};
}

double ExitSignals::read(const Source& source, std::optional<double>& cached, const char* what) {
  if (!cached) {
    if (!source)
      throw Error(std::string("exit rule reads the ") + what +
                  ", which this stack does not provide (the confidence rule is the decoder's)");
    cached = source();
  }
  return *cached;
}

ExitController::ExitController(ExitPolicy policy) : policy_(policy) { policy_.validate(); }

namespace {

const char* stack_name(ExitStack s) {
  return s == ExitStack::kImage ? "image" : s == ExitStack::kText ? "text" : "decoder";
}

}  // namespace

double ExitController::scheduled(double theta, int step, int max_len) const {
  if (step < 0) return theta;  // not generating: one pass, static threshold (spec 1.4)
  switch (policy_.decoder_schedule) {
    case DecoderSchedule::kStatic:
      return theta;
    case DecoderSchedule::kDecaying:
      // Released MuE code (spec 1.4): all layers run for the first third of the steps.
      if (step < (max_len + 1) / 3.0) return 1.0;
      return 0.9 * theta + 0.1 * std::exp(-(step + 1.0) / (max_len + 1.0));
    case DecoderSchedule::kCalm: {
      double beta = policy_.calm_beta;
      double v = beta * theta +
                 (1.0 - beta) * std::exp(-policy_.calm_tau * (step + 1.0) / (max_len + 1.0));
      return std::clamp(v, 0.0, 1.0);
    }
  }
  return theta;
}

double ExitController::decoder_threshold(int step, int max_len) const {
  return scheduled(reads_confidence(ExitStack::kDecoder) ? policy_.confidence_threshold
                                                         : policy_.exit_threshold_decoder,
                   step, max_len);
}

namespace {

// The stack's per-layer list and single threshold under its rule.
std::pair<const std::vector<double>*, double> base_thresholds(const ExitPolicy& p,
                                                              ExitStack stack) {
  switch (stack) {
    case ExitStack::kImage:
      return {&p.exit_thresholds_image, p.exit_threshold_image};
    case ExitStack::kText:
      return {&p.exit_thresholds_text, p.exit_threshold_text};
    case ExitStack::kDecoder:
      if (p.decoder_rule == DecoderRule::kConfidence)
        return {&p.confidence_thresholds, p.confidence_threshold};
      return {&p.exit_thresholds_decoder, p.exit_threshold_decoder};
  }
  return {nullptr, 1.0};
}

const char* list_name(const ExitPolicy& p, ExitStack stack) {
  switch (stack) {
    case ExitStack::kImage:
      return "exit_thresholds_image";
    case ExitStack::kText:
      return "exit_thresholds_text";
    case ExitStack::kDecoder:
      return p.decoder_rule == DecoderRule::kConfidence ? "confidence_thresholds"
                                                        : "exit_thresholds_decoder";
  }
  return "?";
}

void check_list(const ExitPolicy& p, ExitStack stack, int num_layers) {
  const std::vector<double>& list = *base_thresholds(p, stack).first;
  if (!list.empty() && static_cast<int>(list.size()) != num_layers - 1)
    throw Error(std::string("exit policy: ") + list_name(p, stack) + " has " +
                std::to_string(list.size()) + " values; the " + stack_name(stack) + " stack has " +
                std::to_string(num_layers) + " layers, so it needs " +
                std::to_string(num_layers - 1) + " (one per layer before the last)");
}

}  // namespace

void ExitController::check_layers(int encoder_layers, int decoder_layers) const {
  check_list(policy_, ExitStack::kImage, encoder_layers);
  check_list(policy_, ExitStack::kText, encoder_layers);
  check_list(policy_, ExitStack::kDecoder, decoder_layers);
}

double ExitController::threshold(ExitStack stack, int layer, int num_layers, int step,
                                 int max_len) const {
  check_list(policy_, stack, num_layers);
  auto [list, single] = base_thresholds(policy_, stack);
  double base = list->empty() || layer < 0 || layer >= static_cast<int>(list->size())
                    ? single
                    : (*list)[static_cast<size_t>(layer)];
  // A base of 1.0 turns the exit off whatever the schedule would make of it.
  if (base >= 1.0) return 1.0;
  return stack == ExitStack::kDecoder ? scheduled(base, step, max_len) : base;
}

bool ExitController::uses_similarity(ExitStack stack) const {
  int fixed = stack == ExitStack::kImage  ? policy_.fixed_depth_image
              : stack == ExitStack::kText ? policy_.fixed_depth_text
                                          : policy_.fixed_depth_decoder;
  if (fixed > 0) return false;
  auto [list, single] = base_thresholds(policy_, stack);
  if (list->empty()) return single < 1.0;
  return std::any_of(list->begin(), list->end(), [](double v) { return v < 1.0; });
}

bool ExitController::can_exit(ExitStack stack) const {
  int fixed = stack == ExitStack::kImage  ? policy_.fixed_depth_image
              : stack == ExitStack::kText ? policy_.fixed_depth_text
                                          : policy_.fixed_depth_decoder;
  return fixed > 0 || uses_similarity(stack);
}

ExitDecision ExitController::decision(ExitStack stack, int num_layers, int step,
                                      int max_len) const {
  check_list(policy_, stack, num_layers);
  if (!can_exit(stack)) return {};
  const bool confidence = reads_confidence(stack);
  return ExitDecision([this, stack, num_layers, step, max_len, confidence](int layer, int64_t,
                                                                           const ExitSignals& s) {
           if (layer + 1 >= num_layers) return true;
           if (!uses_similarity(stack))
             return should_exit(stack, layer, num_layers, 0.0, step, max_len);
           // Read the signal only where it can decide anything.
           if (threshold(stack, layer, num_layers, step, max_len) >= 1.0) return false;
           double signal = confidence ? s.confidence() : s.cosine();
           return should_exit(stack, layer, num_layers, signal, step, max_len);
         })
      .with_measure(policy_.confidence_measure);
}

bool ExitController::should_exit(ExitStack stack, int layer, int num_layers, double signal,
                                 int step, int max_len) const {
  if (layer + 1 >= num_layers) return true;
  int fixed = stack == ExitStack::kImage  ? policy_.fixed_depth_image
              : stack == ExitStack::kText ? policy_.fixed_depth_text
                                          : policy_.fixed_depth_decoder;
  if (fixed > 0) return layer + 1 >= fixed;
  double t = threshold(stack, layer, num_layers, step, max_len);
  // Strictly greater, as the reference; 1.0 never exits, even if rounding lifts a cosine past 1.
  return t < 1.0 && signal > t;
}

}  // namespace mue
