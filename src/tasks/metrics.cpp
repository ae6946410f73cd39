#include "tasks/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "mue/tensor.h"

namespace mue {
namespace {

constexpr int kMaxOrder = 4;         // BLEU-4, CIDEr-D n = 1..4
constexpr double kBleuTiny = 1e-15;  // bleu_scorer.py: keeps a zero count's precision finite
constexpr double kBleuSmall = 1e-9;  // bleu_scorer.py: avoids division by zero
constexpr double kCiderSigma = 6.0;  // cider_scorer.py: width of the length penalty
constexpr double kRougeBeta = 1.2;   // rouge.py: recall weighs beta^2 as much as precision
constexpr uint32_t kNoToken = UINT32_MAX;

// An n-gram of token ids, n = 1..4: ids[0] is always a token, unused slots hold kNoToken.
struct NGram {
  std::array<uint32_t, kMaxOrder> ids;
  int order() const {
    int n = 1;
    while (n < kMaxOrder && ids[n] != kNoToken) ++n;
    return n;
  }
  bool operator==(const NGram& other) const { return ids == other.ids; }
};

struct NGramHash {
  size_t operator()(const NGram& g) const {
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint32_t id : g.ids) h = (h ^ id) * 0x100000001b3ull;
    return static_cast<size_t>(h ^ (h >> 29));
  }
};

template <typename Value>
using NGramMap = std::unordered_map<NGram, Value, NGramHash>;

// A caption as token ids plus its n-gram counts for n = 1..4.
struct Sentence {
  std::vector<uint32_t> ids;
  NGramMap<int> counts;
};

class Vocabulary {
 public:
  uint32_t id(const std::string& token) {
    return ids_.try_emplace(token, static_cast<uint32_t>(ids_.size())).first->second;
  }

 private:
  std::unordered_map<std::string, uint32_t> ids_;
};

Sentence make_sentence(const CaptionTokens& tokens, Vocabulary& vocabulary) {
  Sentence s;
  s.ids.reserve(tokens.size());
  for (const std::string& t : tokens) s.ids.push_back(vocabulary.id(t));
  const int len = static_cast<int>(s.ids.size());
  for (int n = 1; n <= kMaxOrder; ++n) {
    for (int start = 0; start + n <= len; ++start) {
      NGram g;
      g.ids.fill(kNoToken);
      std::copy_n(s.ids.begin() + start, n, g.ids.begin());
      ++s.counts[g];
    }
  }
  return s;
}

// bleu_scorer.py, compute_score(option="closest").
std::array<double, kMaxOrder> corpus_bleu(const std::vector<Sentence>& candidates,
                                          const std::vector<std::vector<Sentence>>& references) {
  std::array<double, kMaxOrder> correct{}, guess{};
  double candidate_length = 0, reference_length = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const Sentence& candidate = candidates[i];
    const int length = static_cast<int>(candidate.ids.size());
    // Clip each n-gram's count by its largest count in any one reference.
    NGramMap<int> max_reference_count;
    int closest = -1;
    for (const Sentence& reference : references[i]) {
      for (const auto& [g, count] : reference.counts) {
        int& best = max_reference_count[g];
        best = std::max(best, count);
      }
      // "closest": the reference length nearest the candidate's; of two, the shorter.
      const int ref_len = static_cast<int>(reference.ids.size());
      if (closest < 0 || std::abs(ref_len - length) < std::abs(closest - length) ||
          (std::abs(ref_len - length) == std::abs(closest - length) && ref_len < closest))
        closest = ref_len;
    }
    for (const auto& [g, count] : candidate.counts) {
      auto it = max_reference_count.find(g);
      if (it != max_reference_count.end()) correct[g.order() - 1] += std::min(count, it->second);
    }
    for (int k = 0; k < kMaxOrder; ++k) guess[k] += std::max(0, length - k);
    candidate_length += length;
    reference_length += closest;
  }
  std::array<double, kMaxOrder> bleu{};
  const double ratio = (candidate_length + kBleuTiny) / (reference_length + kBleuSmall);
  const double brevity_penalty = ratio < 1 ? std::exp(1 - 1 / ratio) : 1.0;
  double product = 1;
  for (int n = 1; n <= kMaxOrder; ++n) {
    product *= (correct[n - 1] + kBleuTiny) / (guess[n - 1] + kBleuSmall);
    bleu[n - 1] = std::pow(product, 1.0 / n) * brevity_penalty;
  }
  return bleu;
}

// A sentence as cider_scorer.py sees it: tf-idf weights of its n-grams, the norm per order, and
// its "length", which the toolkit counts as the number of bigrams (its `if n == 1` tests the
// 0-based order), i.e. words - 1 for a non-empty sentence.
struct TfIdf {
  NGramMap<double> weights;
  std::array<double, kMaxOrder> norms{};
  int length = 0;
};

TfIdf tf_idf(const Sentence& s, const NGramMap<int>& document_frequency, double log_corpus_size) {
  TfIdf v;
  for (const auto& [g, count] : s.counts) {
    auto it = document_frequency.find(g);
    const double df = it == document_frequency.end() ? 0.0 : it->second;
    const double weight = count * (log_corpus_size - std::log(std::max(1.0, df)));
    v.weights.emplace(g, weight);
    const int order = g.order();
    v.norms[order - 1] += weight * weight;
    if (order == 2) v.length += count;
  }
  for (double& norm : v.norms) norm = std::sqrt(norm);
  return v;
}

// cider_scorer.py sim(): per order, the candidate's weights clipped by the reference's, cosine
// against the reference, times a Gaussian penalty on the length difference. Adds into `sums`.
void add_cider_similarity(const TfIdf& candidate, const TfIdf& reference,
                          std::array<double, kMaxOrder>& sums) {
  std::array<double, kMaxOrder> dot{};
  for (const auto& [g, weight] : candidate.weights) {
    auto it = reference.weights.find(g);
    if (it == reference.weights.end()) continue;
    dot[g.order() - 1] += std::min(weight, it->second) * it->second;
  }
  const double delta = candidate.length - reference.length;
  const double penalty = std::exp(-(delta * delta) / (2 * kCiderSigma * kCiderSigma));
  for (int k = 0; k < kMaxOrder; ++k) {
    double value = dot[k];
    if (candidate.norms[k] != 0 && reference.norms[k] != 0)
      value /= candidate.norms[k] * reference.norms[k];
    sums[k] += value * penalty;
  }
}

// cider_scorer.py (CIDEr-D): document frequencies over the references of this corpus.
std::vector<double> cider_d_per_sample(const std::vector<Sentence>& candidates,
                                       const std::vector<std::vector<Sentence>>& references) {
  NGramMap<int> document_frequency;
  for (const auto& sample_references : references) {
    std::unordered_set<NGram, NGramHash> seen;
    for (const Sentence& reference : sample_references)
      for (const auto& entry : reference.counts) seen.insert(entry.first);
    for (const NGram& g : seen) ++document_frequency[g];
  }
  const double log_corpus_size = std::log(static_cast<double>(candidates.size()));
  std::vector<double> scores(candidates.size());
  for (size_t i = 0; i < candidates.size(); ++i) {
    const TfIdf candidate = tf_idf(candidates[i], document_frequency, log_corpus_size);
    std::array<double, kMaxOrder> sums{};
    for (const Sentence& reference : references[i])
      add_cider_similarity(candidate, tf_idf(reference, document_frequency, log_corpus_size), sums);
    double mean_over_orders = 0;
    for (double s : sums) mean_over_orders += s;
    mean_over_orders /= kMaxOrder;
    scores[i] = mean_over_orders / static_cast<double>(references[i].size()) * 10.0;
  }
  return scores;
}

size_t lcs_length(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b) {
  std::vector<size_t> previous(b.size() + 1, 0), current(b.size() + 1, 0);
  for (uint32_t x : a) {
    for (size_t j = 1; j <= b.size(); ++j)
      current[j] = x == b[j - 1] ? previous[j - 1] + 1 : std::max(previous[j], current[j - 1]);
    std::swap(previous, current);
  }
  return previous[b.size()];
}

// rouge.py calc_score(). The toolkit splits with split(" "), so an empty caption is one empty
// token; `empty_token` reproduces that (it matters only when both captions are empty).
double rouge_l(const Sentence& candidate, const std::vector<Sentence>& references,
               uint32_t empty_token) {
  auto as_split = [&](const Sentence& s) {
    return s.ids.empty() ? std::vector<uint32_t>{empty_token} : s.ids;
  };
  const std::vector<uint32_t> c = as_split(candidate);
  double best_precision = 0, best_recall = 0;
  for (const Sentence& reference : references) {
    const std::vector<uint32_t> r = as_split(reference);
    const double lcs = static_cast<double>(lcs_length(r, c));
    best_precision = std::max(best_precision, lcs / static_cast<double>(c.size()));
    best_recall = std::max(best_recall, lcs / static_cast<double>(r.size()));
  }
  if (best_precision == 0 || best_recall == 0) return 0;
  const double beta2 = kRougeBeta * kRougeBeta;
  return (1 + beta2) * best_precision * best_recall / (best_recall + beta2 * best_precision);
}

double mean(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  return sum / static_cast<double>(values.size());
}

// The characters of the toolkit's dropped tokens: . , ? ! : ; - -- ... ' '' ` `` and the
// brackets PTB writes as -LRB- -RRB- -LCB- -RCB-.
constexpr std::string_view kPunctuation = ".,?!:;-'\"`(){}";

bool is_punctuation(char c) { return kPunctuation.find(c) != std::string_view::npos; }

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// PTB splits these off the word before them ("do" "n't"); n't is tried first so that "n't" is
// not read as a word ending in 't.
constexpr std::array<std::string_view, 7> kClitics = {"n't", "'s", "'re", "'ve", "'ll", "'d", "'m"};

void append_chunk_tokens(std::string_view chunk, CaptionTokens& out) {
  while (!chunk.empty() && is_punctuation(chunk.back())) chunk.remove_suffix(1);
  if (std::find(kClitics.begin(), kClitics.end(), chunk) != kClitics.end()) {
    out.emplace_back(chunk);
    return;
  }
  while (!chunk.empty() && is_punctuation(chunk.front())) chunk.remove_prefix(1);
  if (chunk.empty()) return;
  for (std::string_view clitic : kClitics) {
    if (chunk.size() > clitic.size() && chunk.ends_with(clitic)) {
      out.emplace_back(chunk.substr(0, chunk.size() - clitic.size()));
      out.emplace_back(clitic);
      return;
    }
  }
  out.emplace_back(chunk);
}

}  // namespace

CaptionTokens tokenize_caption(std::string_view caption) {
  std::string lowered(caption);
  for (char& c : lowered)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  CaptionTokens tokens;
  std::string_view rest(lowered);
  while (!rest.empty()) {
    while (!rest.empty() && is_space(rest.front())) rest.remove_prefix(1);
    size_t end = 0;
    while (end < rest.size() && !is_space(rest[end])) ++end;
    if (end > 0) append_chunk_tokens(rest.substr(0, end), tokens);
    rest.remove_prefix(end);
  }
  return tokens;
}

CaptionScores score_tokenized_captions(const std::vector<CaptionTokens>& candidates,
                                       const std::vector<std::vector<CaptionTokens>>& references) {
  if (candidates.size() != references.size())
    throw Error("caption metrics: " + std::to_string(candidates.size()) + " candidates but " +
                std::to_string(references.size()) + " reference lists; they must pair up");
  if (candidates.empty()) throw Error("caption metrics: no captions to score (empty corpus)");
  for (size_t i = 0; i < references.size(); ++i)
    if (references[i].empty())
      throw Error("caption metrics: sample " + std::to_string(i) +
                  " has no reference caption; every sample needs at least one");

  Vocabulary vocabulary;
  std::vector<Sentence> candidate_sentences;
  std::vector<std::vector<Sentence>> reference_sentences(references.size());
  candidate_sentences.reserve(candidates.size());
  for (size_t i = 0; i < candidates.size(); ++i) {
    candidate_sentences.push_back(make_sentence(candidates[i], vocabulary));
    for (const CaptionTokens& reference : references[i])
      reference_sentences[i].push_back(make_sentence(reference, vocabulary));
  }
  const uint32_t empty_token = vocabulary.id("");

  CaptionScores scores;
  scores.bleu = corpus_bleu(candidate_sentences, reference_sentences);
  scores.cider_d_per_sample = cider_d_per_sample(candidate_sentences, reference_sentences);
  scores.cider_d = mean(scores.cider_d_per_sample);
  scores.rouge_l_per_sample.reserve(candidates.size());
  for (size_t i = 0; i < candidates.size(); ++i)
    scores.rouge_l_per_sample.push_back(
        rouge_l(candidate_sentences[i], reference_sentences[i], empty_token));
  scores.rouge_l = mean(scores.rouge_l_per_sample);
  return scores;
}

CaptionScores score_captions(const std::vector<std::string>& candidates,
                             const std::vector<std::vector<std::string>>& references) {
  std::vector<CaptionTokens> candidate_tokens;
  candidate_tokens.reserve(candidates.size());
  for (const std::string& c : candidates) candidate_tokens.push_back(tokenize_caption(c));
  std::vector<std::vector<CaptionTokens>> reference_tokens(references.size());
  for (size_t i = 0; i < references.size(); ++i)
    for (const std::string& r : references[i]) reference_tokens[i].push_back(tokenize_caption(r));
  return score_tokenized_captions(candidate_tokens, reference_tokens);
}

}  // namespace mue
