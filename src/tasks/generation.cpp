#include "tasks/generation.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

#include "core/phase_timer.h"
#include "kernels/kernels.h"

namespace mue {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Candidate {
  double score;
  int64_t beam, token;
};

// Best first; ties keep the lower (beam, token), as a stable sort of fairseq's flat index.
bool ranks_before(const Candidate& a, const Candidate& b) {
  if (a.score != b.score) return a.score > b.score;
  if (a.beam != b.beam) return a.beam < b.beam;
  return a.token < b.token;
}

// fairseq's NGramRepeatBlock: ban tokens that would repeat an n-gram of `seq` (BOS included).
void block_repeated_ngrams(const std::vector<int64_t>& seq, int n, std::vector<float>& lprobs) {
  int64_t len = static_cast<int64_t>(seq.size());
  if (n <= 0 || len + 1 - n < 0) return;
  for (int64_t start = 0; start + n <= len; ++start) {
    bool match = true;
    for (int j = 0; j < n - 1; ++j)
      if (seq[start + j] != seq[len - (n - 1) + j]) {
        match = false;
        break;
      }
    if (match) lprobs[seq[start + n - 1]] = kNegInf;
  }
}

// One beam's best `wanted` continuations of a step: log-softmax of its logits `row`, the bans
// (pad, min/max length, repeated n-grams), then the best by ranks_before, in heap order.
std::vector<Candidate> beam_candidates(const float* row, int64_t vocab, int64_t beam_index,
                                       double beam_score, const std::vector<int64_t>& generated,
                                       int step, const GenerationSettings& opt,
                                       const ModelConfig& cfg, size_t wanted, bool fast_exp) {
  thread_local std::vector<float> lprobs;  // one per thread: beams run in parallel
  lprobs.resize(static_cast<size_t>(vocab));
  const int64_t eos = cfg.eos_id;
  float mx = *std::max_element(row, row + vocab);
  // fp32 exponentials (as torch's log_softmax), accumulated in double: by std::exp under f32,
  // whose captions match the reference's token for token; vectorised under bf16 and int8, whose
  // logits differ from f32's far more than its exp does (about 2e-7 relative).
  const double sum = kernels::sum_exp_shifted(row, vocab, mx, fast_exp);
  float lse = mx + static_cast<float>(std::log(sum));
  for (int64_t v = 0; v < vocab; ++v) lprobs[v] = row[v] - lse;
  lprobs[cfg.pad_id] = kNegInf;
  if (step >= opt.max_len) {
    for (int64_t v = 0; v < vocab; ++v)
      if (v != eos) lprobs[v] = kNegInf;
  } else if (step < opt.min_len) {
    lprobs[eos] = kNegInf;
  }
  std::vector<int64_t> seq{cfg.bos_id};
  seq.insert(seq.end(), generated.begin(), generated.end());
  block_repeated_ngrams(seq, opt.no_repeat_ngram_size, lprobs);
  // The overall top 2*beam lie among each beam's own top 2*beam: keep those in a bounded heap
  // (its front is the worst kept) instead of sorting the whole vocabulary.
  std::vector<Candidate> best;
  for (int64_t v = 0; v < vocab; ++v) {
    if (lprobs[v] == kNegInf) continue;
    Candidate c{beam_score + lprobs[v], beam_index, v};
    if (best.size() < wanted) {
      best.push_back(c);
      std::push_heap(best.begin(), best.end(), ranks_before);
    } else if (ranks_before(c, best.front())) {
      std::pop_heap(best.begin(), best.end(), ranks_before);
      best.back() = c;
      std::push_heap(best.begin(), best.end(), ranks_before);
    }
  }
  return best;
}

}  // namespace

void GenerationSettings::validate() const {
  auto fail = [](const char* field, const std::string& why) {
    throw Error(std::string("generation: ") + field + " " + why);
  };
  if (beam_size < 1) fail("beam_size", "must be at least 1, got " + std::to_string(beam_size));
  if (max_len < 1) fail("max_len", "must be at least 1, got " + std::to_string(max_len));
  if (min_len < 0 || min_len > max_len)
    fail("min_len", "must lie in 0..max_len (" + std::to_string(max_len) + "), got " +
                        std::to_string(min_len));
  if (no_repeat_ngram_size < 0)
    fail("no_repeat_ngram_size", "must be >= 0, got " + std::to_string(no_repeat_ngram_size));
  if (!std::isfinite(length_penalty))
    fail("length_penalty", "must be a finite number, got " + std::to_string(length_penalty));
}

nlohmann::json GenerationSettings::to_json() const {
  return {{"beam_size", beam_size},
          {"max_len", max_len},
          {"min_len", min_len},
          {"no_repeat_ngram_size", no_repeat_ngram_size},
          {"length_penalty", length_penalty}};
}

std::vector<GenerationResult> beam_search(const OfaModel& model, const EncoderOutput& enc,
                                          const GenerationSettings& opt,
                                          const ExitController& exits, Arena* arena) {
  opt.validate();
  const ModelConfig& cfg = model.config();
  const int64_t beam = opt.beam_size, vocab = cfg.vocab_size, batch = enc.batch;
  const int64_t eos = cfg.eos_id, bos = cfg.bos_id;
  const int layers = model.num_decoder_layers();
  DecoderState st = model.start_decoding(enc, beam, opt.max_len + 1);

  std::vector<GenerationResult> results(static_cast<size_t>(batch));
  // Per active sample (in row-group order): its index and its beams' tokens and scores.
  std::vector<int64_t> active(static_cast<size_t>(batch));
  std::iota(active.begin(), active.end(), 0);
  std::vector<std::vector<std::vector<int64_t>>> tokens(
      static_cast<size_t>(batch), std::vector<std::vector<int64_t>>(static_cast<size_t>(beam)));
  std::vector<std::vector<double>> scores(static_cast<size_t>(batch),
                                          std::vector<double>(static_cast<size_t>(beam), 0.0));
  const size_t wanted = static_cast<size_t>(2 * beam);

  for (int step = 0; step <= opt.max_len && !active.empty(); ++step) {
    std::vector<int64_t> input;
    for (int64_t s : active)
      for (int64_t b = 0; b < beam; ++b) input.push_back(step == 0 ? bos : tokens[s][b].back());
    std::vector<int> group_layers;
    Tensor logits =
        model.decode_step(st, input, exits.decision(ExitStack::kDecoder, layers, step, opt.max_len),
                          exits.policy().skipped_layer_cache, &group_layers, arena);
    // The rest of the step, the beams' reorder of the self-attention cache included.
    PhaseScope search(Phase::kSearch);

    // Each beam's own candidates, row by row: independent, so the rows run in parallel (the
    // same bits at any thread count) and are merged per sample below, in beam order.
    const int64_t beams_here = step == 0 ? 1 : beam;  // all beams start identical: use the first
    const int64_t rows_here = static_cast<int64_t>(active.size()) * beams_here;
    std::vector<std::vector<Candidate>> row_best(static_cast<size_t>(rows_here));
    const float* all_logits = logits.data<float>();
    bool failed = false;  // exceptions may not leave an OpenMP region
    const bool fast_exp = model.compute_type() != ComputeType::kF32;
#pragma omp parallel for schedule(dynamic, 1) if (rows_here > 1 && vocab >= 4096)
    for (int64_t i = 0; i < rows_here; ++i) {
      const int64_t g = i / beams_here, b = i % beams_here, s = active[static_cast<size_t>(g)];
      try {
        row_best[static_cast<size_t>(i)] =
            beam_candidates(all_logits + (g * beam + b) * vocab, vocab, b, scores[s][b],
                            tokens[s][b], step, opt, cfg, wanted, fast_exp);
      } catch (...) {
#pragma omp atomic write
        failed = true;
      }
    }
    if (failed) throw Error("beam search: out of memory while ranking the candidates");

    std::vector<int64_t> next_active, src_rows;
    for (size_t g = 0; g < active.size(); ++g) {
      int64_t s = active[g];
      results[s].decoder_layers.push_back(group_layers[g]);
      std::vector<Candidate> cands;
      for (int64_t b = 0; b < beams_here; ++b) {
        const std::vector<Candidate>& best =
            row_best[g * static_cast<size_t>(beams_here) + static_cast<size_t>(b)];
        cands.insert(cands.end(), best.begin(), best.end());
      }
      // Top 2*beam candidates, best first; ties keep the lower (beam, token).
      size_t k = std::min(wanted, cands.size());
      std::partial_sort(cands.begin(), cands.begin() + k, cands.end(), ranks_before);
      cands.resize(k);
      auto& finals = results[s].hypotheses;
      // EOS among the top `beam` candidates ends a hypothesis (fairseq finalize_hypos).
      for (size_t i = 0; i < cands.size() && i < static_cast<size_t>(beam); ++i)
        if (cands[i].token == eos && static_cast<int64_t>(finals.size()) < beam) {
          Hypothesis h;
          h.tokens = tokens[s][cands[i].beam];
          h.tokens.push_back(eos);
          h.score = cands[i].score / std::pow(step + 1.0, opt.length_penalty);
          finals.push_back(std::move(h));
        }
      bool done = static_cast<int64_t>(finals.size()) >= beam || step >= opt.max_len;
      if (done) continue;
      // The next beams: the best `beam` candidates that are not EOS.
      std::vector<std::vector<int64_t>> new_tokens;
      std::vector<double> new_scores;
      for (const Candidate& c : cands) {
        if (c.token == eos) continue;
        if (static_cast<int64_t>(new_tokens.size()) == beam) break;
        new_tokens.push_back(tokens[s][c.beam]);
        new_tokens.back().push_back(c.token);
        new_scores.push_back(c.score);
        src_rows.push_back(static_cast<int64_t>(g) * beam + c.beam);
      }
      if (static_cast<int64_t>(new_tokens.size()) < beam)
        throw Error("beam search: fewer than beam_size live candidates (vocabulary too small?)");
      tokens[s] = std::move(new_tokens);
      scores[s] = std::move(new_scores);
      next_active.push_back(s);
    }
    active = std::move(next_active);
    if (!active.empty()) st.reorder_rows(src_rows);
  }
  for (auto& r : results)
    std::stable_sort(r.hypotheses.begin(), r.hypotheses.end(),
                     [](const Hypothesis& a, const Hypothesis& b) { return a.score > b.score; });
  return results;
}

}  // namespace mue
