// Beam search over the incremental decoder, as fairseq's SequenceGenerator does it for OFA
// captioning (spec 2.2), with MuE decoder exits taken per sample and per step (spec 1.3-1.4).
#pragma once

#include <cstdint>
#include <vector>

#include "model/exit_controller.h"
#include "model/ofa_model.h"

namespace mue {

struct GenerationOptions {
  int beam_size = 5;  // 1 = greedy
  int max_len = 16;   // generated tokens before the forced EOS
  int min_len = 1;    // EOS is banned before this many tokens
  int no_repeat_ngram_size = 3;
  double length_penalty = 1.0;  // final score = sum log p / length^penalty
  void validate() const;
};

struct Hypothesis {
  std::vector<int64_t> tokens;  // generated tokens, ending with EOS
  double score = 0;             // length-normalised log probability
};

struct GenerationResult {
  std::vector<Hypothesis> hypotheses;  // best first
  std::vector<int> decoder_layers;     // decoder layers used at each step of this sample
};

// Generates for every sample of `enc`. Exits follow `exits`; skipped layers' caches follow its
// policy's skipped_layer_cache.
std::vector<GenerationResult> beam_search(OfaModel& model, const EncoderOutput& enc,
                                          const GenerationOptions& options,
                                          const ExitController& exits);

}  // namespace mue
