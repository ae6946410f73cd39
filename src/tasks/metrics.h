// Caption metrics as the COCO caption toolkit (pycocoevalcap) computes them: corpus BLEU-1..4,
// CIDEr-D and ROUGE-L (spec 2.2: "Metrics come from the COCO caption toolkit").
//
// Tokenisation. The toolkit runs the Stanford PTB tokenizer (Java) with -lowerCase and then drops
// the tokens '' ' `` ` -LRB- -RRB- -LCB- -RCB- . ? ! , : - -- ... ; . tokenize_caption() is a
// small stand-in for that pipeline, applied to each whitespace-separated chunk:
//   1. ASCII letters are lowercased; other bytes (UTF-8 included) are kept as they are.
//   2. Trailing punctuation characters . , ? ! : ; - ' " ` ( ) { } are cut off.
//   3. A chunk that is now exactly a clitic ('s 're 've 'll 'd 'm n't) is kept as it is.
//   4. Leading punctuation characters (same set) are cut off; a chunk left empty is dropped.
//   5. A trailing clitic is split off as its own token: "man's" -> "man" "'s",
//      "don't" -> "do" "n't" (PTB does the same).
// Known differences from PTB: punctuation inside a chunk stays ("a,b" is one token where PTB
// makes three and drops the comma); $ % & # / are not split off; [ ] are not converted to -LSB-;
// PTB's abbreviation and number rules ("u.s." at a sentence end, "3.5") are not reproduced.
// Captions produced by the model carry no punctuation (spec 2.2 strips it), so the differences
// only touch references, and there only in rare cases.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

namespace mue {

using CaptionTokens = std::vector<std::string>;

// The tokenisation described above.
CaptionTokens tokenize_caption(std::string_view caption);

struct CaptionScores {
  // Corpus BLEU-1..4: clipped n-gram counts and lengths summed over the corpus, the reference
  // length of each sample the one closest to the candidate's length (ties: the shorter), one
  // brevity penalty for the corpus, smoothing constants 1e-15 (numerator) and 1e-9 (denominator).
  std::array<double, 4> bleu{};
  // CIDEr-D (x10 scale, as the toolkit reports it, e.g. 1.439 for the paper's 143.9): the mean of
  // cider_d_per_sample.
  double cider_d = 0;
  // ROUGE-L F (beta 1.2) from the best precision and the best recall over the references: the mean
  // of rouge_l_per_sample.
  double rouge_l = 0;
  std::vector<double> cider_d_per_sample;
  std::vector<double> rouge_l_per_sample;
};

// Scores candidates[i] against references[i] (one or more captions each) after
// tokenize_caption(). CIDEr-D's document frequencies come from the references passed here, so
// scores depend on the whole corpus, as in the toolkit. Throws mue::Error when the two sizes
// differ, the corpus is empty, or a sample has no reference.
CaptionScores score_captions(const std::vector<std::string>& candidates,
                             const std::vector<std::vector<std::string>>& references);

// The same on captions already split into tokens (no tokenisation is applied).
CaptionScores score_tokenized_captions(const std::vector<CaptionTokens>& candidates,
                                       const std::vector<std::vector<CaptionTokens>>& references);

}  // namespace mue
