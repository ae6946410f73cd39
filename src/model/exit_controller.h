// The one place that decides early exits. Every stack (image stream, text stream, decoder)
// asks it after every layer, offering the signals it can compute (the cosine of the layer's
// output and input; the decoder also the answer's confidence); it knows rules, thresholds,
// schedules and statistics, and nothing about attention.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <utility>

#include "mue/exit_policy.h"

namespace mue {

enum class ExitStack { kImage = 0, kText = 1, kDecoder = 2 };

// What an exit rule may read after a layer, each computed on first use only: the stack's
// cosine cos(output, input) over the group's unpadded elements, and (decoder only) the answer's
// confidence at this layer under the rule's measure.
class ExitSignals {
 public:
  using Source = std::function<double()>;
  ExitSignals(Source cosine, Source confidence)
      : cosine_(std::move(cosine)), confidence_(std::move(confidence)) {}
  double cosine() const { return read(cosine_, cosine_value_, "cosine"); }
  double confidence() const { return read(confidence_, confidence_value_, "confidence"); }

 private:
  static double read(const Source& source, std::optional<double>& cached, const char* what);
  Source cosine_, confidence_;
  mutable std::optional<double> cosine_value_, confidence_value_;
};

// The exit loop's one decision callback: after layer `layer` (0-based, never the last) of a
// stack, should exit group `group` stop there? The rule reads what it needs from the signals.
// Empty: the stack runs to full depth.
class ExitDecision {
 public:
  using Rule = std::function<bool(int layer, int64_t group, const ExitSignals& signals)>;
  // A rule on the cosine alone (tests, ablations); without `needs_cosine` it gets NaN.
  using CosineRule = std::function<bool(int layer, int64_t group, double cosine)>;
  ExitDecision() = default;
  explicit ExitDecision(Rule rule) : rule_(std::move(rule)) {}
  ExitDecision(CosineRule rule, bool needs_cosine)
      : rule_(
            [rule = std::move(rule), needs_cosine](int layer, int64_t group, const ExitSignals& s) {
              return rule(layer, group, needs_cosine ? s.cosine() : std::nan(""));
            }) {}

  explicit operator bool() const { return static_cast<bool>(rule_); }
  bool operator()(int layer, int64_t group, const ExitSignals& signals) const {
    return rule_(layer, group, signals);
  }
  // How the stack measures the confidence it offers (the policy's confidence_measure).
  ConfidenceMeasure confidence_measure() const { return measure_; }
  ExitDecision& with_measure(ConfidenceMeasure m) {
    measure_ = m;
    return *this;
  }

 private:
  Rule rule_;
  ConfidenceMeasure measure_ = ConfidenceMeasure::kTop1;
};

class ExitController {
 public:
  explicit ExitController(ExitPolicy policy);
  const ExitPolicy& policy() const { return policy_; }

  // The decoder threshold `theta` at generation step `step` of at most `max_len` (spec 1.4); a
  // negative step (a single non-incremental pass, as entailment) gets theta itself.
  double scheduled(double theta, int step, int max_len) const;
  // The decoder's single threshold (of its rule) under the schedule.
  double decoder_threshold(int step, int max_len) const;
  // The threshold after layer `layer` (0-based) of `num_layers`: the per-layer value where
  // given, else the stack's single one; the decoder's under its schedule. 1.0 (or a base of
  // 1.0) never exits. Throws mue::Error if a per-layer list does not fit `num_layers`.
  double threshold(ExitStack stack, int layer, int num_layers, int step = -1,
                   int max_len = 0) const;
  // The signal the stack's rule reads: the cosine, or (decoder rule `confidence`) the answer's
  // confidence.
  bool reads_confidence(ExitStack stack) const {
    return stack == ExitStack::kDecoder && policy_.decoder_rule == DecoderRule::kConfidence;
  }
  // After layer `layer` (0-based) of `num_layers`: stop here, given the value of the signal
  // the rule reads (cosine or confidence)? `step`/`max_len` matter only for the decoder
  // schedule. The last layer always stops.
  bool should_exit(ExitStack stack, int layer, int num_layers, double signal, int step = -1,
                   int max_len = 0) const;
  // Whether any signal is needed at all (false for full depth and fixed depths).
  bool uses_similarity(ExitStack stack) const;
  // Whether the stack can stop early at all (a threshold below 1 or a fixed depth).
  bool can_exit(ExitStack stack) const;
  // The stack's decision for its exit loop, or an empty one for full depth. `step`/`max_len`:
  // the decoding step of incremental generation (its threshold schedule); a negative step is a
  // single pass. The decision reads a signal only after layers whose threshold is below 1.
  // Throws mue::Error if a per-layer list does not fit `num_layers`. The controller must
  // outlive the returned decision.
  ExitDecision decision(ExitStack stack, int num_layers, int step = -1, int max_len = 0) const;
  // Throws mue::Error naming the field if a per-layer list does not fit the stacks' depths.
  void check_layers(int encoder_layers, int decoder_layers) const;

 private:
  ExitPolicy policy_;
};

}  // namespace mue
