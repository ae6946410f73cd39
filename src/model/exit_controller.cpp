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
          {"decoder_schedule", decoder_schedule_name(decoder_schedule)},
          {"calm_beta", calm_beta},
          {"calm_tau", calm_tau},
          {"fixed_depth_image", fixed_depth_image},
          {"fixed_depth_text", fixed_depth_text},
          {"fixed_depth_decoder", fixed_depth_decoder},
          {"skipped_layer_cache", skipped_layer_cache_name(skipped_layer_cache)}};
}

ExitController::ExitController(ExitPolicy policy) : policy_(policy) { policy_.validate(); }

double ExitController::decoder_threshold(int step, int max_len) const {
  double theta = policy_.exit_threshold_decoder;
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

bool ExitController::uses_similarity(ExitStack stack) const {
  switch (stack) {
    case ExitStack::kImage:
      return policy_.fixed_depth_image == 0 && policy_.exit_threshold_image < 1.0;
    case ExitStack::kText:
      return policy_.fixed_depth_text == 0 && policy_.exit_threshold_text < 1.0;
    case ExitStack::kDecoder:
      return policy_.fixed_depth_decoder == 0 && policy_.exit_threshold_decoder < 1.0;
  }
  return false;
}

bool ExitController::can_exit(ExitStack stack) const {
  int fixed = stack == ExitStack::kImage  ? policy_.fixed_depth_image
              : stack == ExitStack::kText ? policy_.fixed_depth_text
                                          : policy_.fixed_depth_decoder;
  return fixed > 0 || uses_similarity(stack);
}

ExitDecision ExitController::decision(ExitStack stack, int num_layers, int step,
                                      int max_len) const {
  if (!can_exit(stack)) return {};
  return ExitDecision(
      [this, stack, num_layers, step, max_len](int layer, int64_t, double cosine) {
        return should_exit(stack, layer, num_layers, cosine, step, max_len);
      },
      uses_similarity(stack));
}

bool ExitController::should_exit(ExitStack stack, int layer, int num_layers, double cosine,
                                 int step, int max_len) const {
  if (layer + 1 >= num_layers) return true;
  int fixed = stack == ExitStack::kImage  ? policy_.fixed_depth_image
              : stack == ExitStack::kText ? policy_.fixed_depth_text
                                          : policy_.fixed_depth_decoder;
  if (fixed > 0) return layer + 1 >= fixed;
  double threshold = stack == ExitStack::kImage  ? policy_.exit_threshold_image
                     : stack == ExitStack::kText ? policy_.exit_threshold_text
                                                 : decoder_threshold(step, max_len);
  // Strictly greater, as the reference; 1.0 never exits, even if rounding lifts a cosine past 1.
  return threshold < 1.0 && cosine > threshold;
}

}  // namespace mue
