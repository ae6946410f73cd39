// Beam search over the incremental decoder, as fairseq's SequenceGenerator does it for OFA
// captioning (spec 2.2), with MuE decoder exits taken per sample and per step (spec 1.3-1.4).
#pragma once

#include <cstdint>
#include <vector>

#include "model/exit_controller.h"
#include "model/ofa_model.h"
#include "mue/mue.h"

namespace mue {

struct Hypothesis {
  std::vector<int64_t> tokens;  // generated tokens, ending with EOS
  double score = 0;             // length-normalised log probability
};

struct GenerationResult {
  std::vector<Hypothesis> hypotheses;  // best first
  std::vector<int> decoder_layers;     // decoder layers used at each step of this sample
};

// Generates for every sample of `enc`. Exits follow `exits`; skipped layers' caches follow its
// policy's skipped_layer_cache. `arena`: the call's scratch (null: its own).
std::vector<GenerationResult> beam_search(const OfaModel& model, const EncoderOutput& enc,
                                          const GenerationSettings& options,
                                          const ExitController& exits, Arena* arena = nullptr);

}  // namespace mue
