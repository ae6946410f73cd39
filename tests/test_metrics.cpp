// Caption metrics: hand-computed cases, values printed by the COCO caption toolkit itself
// (pycocoevalcap bleu_scorer.py / cider_scorer.py / rouge.py, run on the same pre-tokenized
// captions), and a cross-check against the independent Python implementation
// tools/caption_metrics.py on a few hundred random captions.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "mue/tensor.h"
#include "python_tool.h"
#include "tasks/metrics.h"

namespace mue {
namespace {

// The toolkit's smoothing constants move BLEU of a perfect match off 1 by about 1e-9.
constexpr double kBleuSmoothing = 1e-8;
constexpr double kExact = 1e-12;

using Corpus = std::vector<std::vector<std::string>>;

TEST(TokenizeCaption, LowercasesAndDropsPunctuationTokens) {
  EXPECT_EQ(tokenize_caption("A Man riding a bike ."),
            (CaptionTokens{"a", "man", "riding", "a", "bike"}));
  EXPECT_EQ(tokenize_caption("  Two dogs,\tplaying -- in the snow...\n"),
            (CaptionTokens{"two", "dogs", "playing", "in", "the", "snow"}));
  EXPECT_EQ(tokenize_caption("\"Stop\" (sign) {x} `quoted' ; : ! ?"),
            (CaptionTokens{"stop", "sign", "x", "quoted"}));
  EXPECT_TRUE(tokenize_caption(" . , ... - ").empty());
  EXPECT_TRUE(tokenize_caption("").empty());
}

TEST(TokenizeCaption, SplitsCliticsLikePtb) {
  EXPECT_EQ(tokenize_caption("The man's dog doesn't bark."),
            (CaptionTokens{"the", "man", "'s", "dog", "does", "n't", "bark"}));
  EXPECT_EQ(tokenize_caption("They're here, we'll see; I'd go, I'm in, you've won"),
            (CaptionTokens{"they", "'re", "here", "we", "'ll", "see", "i", "'d", "go", "i", "'m",
                           "in", "you", "'ve", "won"}));
  // A clitic already split off stays whole; a plural possessive loses its apostrophe, as PTB's
  // "'" token is dropped.
  EXPECT_EQ(tokenize_caption("the man 's dogs' toys"),
            (CaptionTokens{"the", "man", "'s", "dogs", "toys"}));
}

TEST(TokenizeCaption, KeepsInnerPunctuationAndNonAscii) {
  EXPECT_EQ(tokenize_caption("Black-and-white CAFÉ o'clock 3.5"),
            (CaptionTokens{"black-and-white", "cafÉ", "o'clock", "3.5"}));
}

TEST(CaptionMetrics, IdenticalCaptionsScoreOne) {
  CaptionScores s = score_captions({"a man riding a bike"}, {{"a man riding a bike"}});
  for (double b : s.bleu) EXPECT_NEAR(b, 1.0, kBleuSmoothing);
  EXPECT_DOUBLE_EQ(s.rouge_l, 1.0);
  // With one image every n-gram's idf is log(1) - log(1) = 0, so CIDEr-D is 0 (toolkit: 0.0).
  EXPECT_EQ(s.cider_d, 0.0);
  // Toolkit values.
  EXPECT_NEAR(s.bleu[0], 0.9999999996000004, kExact);
  EXPECT_NEAR(s.bleu[3], 0.9999999994791672, kExact);
}

TEST(CaptionMetrics, BleuClipsCountsPapineniExample) {
  // Papineni 2002, section 2.1: unigram precision of 7 x "the" clipped to 2/7; closest reference
  // length 7 (refs 6 and 7), so no brevity penalty; no bigram matches, so BLEU-2 is the
  // smoothed sqrt(2/7 * 1e-15/6).
  CaptionScores s = score_captions({"the the the the the the the"},
                                   {{"the cat is on the mat", "there is a cat on the mat"}});
  EXPECT_NEAR(s.bleu[0], 2.0 / 7.0, kBleuSmoothing);
  EXPECT_NEAR(s.bleu[1], std::sqrt(2.0 / 7.0 * 1e-15 / 6.0), 1e-15);
  // Toolkit values.
  EXPECT_NEAR(s.bleu[0], 0.2857142856326532, kExact);
  EXPECT_NEAR(s.bleu[1], 6.900655591369778e-09, 1e-20);
  EXPECT_NEAR(s.bleu[2], 2.119679665233836e-11, 1e-22);
  EXPECT_NEAR(s.bleu[3], 1.2421889947162098e-12, 1e-23);
  // ROUGE-L: best precision 2/7 (ref 1), best recall 2/6 (ref 1); F with beta 1.2.
  const double p = 2.0 / 7.0, r = 2.0 / 6.0;
  EXPECT_NEAR(s.rouge_l, 2.44 * p * r / (r + 1.44 * p), kExact);
  EXPECT_NEAR(s.rouge_l, 0.31202046035805625, kExact);
}

TEST(CaptionMetrics, BleuBrevityPenaltyIsCorpusLevel) {
  // c = 2, r = 6: BP = exp(1 - 6/2). p1 = p2 = 1; no trigram or 4-gram to guess, so p3 = p4 =
  // 1e-15/1e-9 = 1e-6 (the toolkit's smoothing).
  CaptionScores s = score_captions({"a cat"}, {{"a cat sat on the mat"}});
  const double bp = std::exp(-2.0);
  EXPECT_NEAR(s.bleu[0], bp, kBleuSmoothing);
  EXPECT_NEAR(s.bleu[1], bp, kBleuSmoothing);
  EXPECT_NEAR(s.bleu[2], bp * std::cbrt(1e-6), kBleuSmoothing);
  EXPECT_NEAR(s.bleu[3], bp * std::pow(1e-6 * 1e-6, 0.25), kBleuSmoothing);
  EXPECT_NEAR(s.bleu[3], 0.00013533528311819452, kExact);  // toolkit

  // Two samples: lengths and matches are summed before the penalty, so an empty candidate
  // still counts its closest reference length: c = 0 + 2, r = 2 + 3 (toolkit: 0.22313015992530005).
  CaptionScores t = score_captions({"", "a b"}, {{"a b"}, {"a b c"}});
  EXPECT_NEAR(t.bleu[0], std::exp(1 - 5.0 / 2.0), kBleuSmoothing);
  EXPECT_NEAR(t.bleu[0], 0.22313015992530005, kExact);
  EXPECT_EQ(t.rouge_l_per_sample[0], 0.0);
  EXPECT_EQ(t.cider_d_per_sample[0], 0.0);
}

TEST(CaptionMetrics, BleuClosestReferenceLengthPrefersTheShorterOnATie) {
  // Candidate length 4; references 3 and 5 are equally close: the toolkit takes 3, so no brevity
  // penalty; taking 5 would give exp(1 - 5/4).
  CaptionScores s = score_captions({"a b c d"}, {{"a b c", "a b c d e"}});
  EXPECT_NEAR(s.bleu[0], 1.0, kBleuSmoothing);
}

TEST(CaptionMetrics, RougeLFollowsLin2004) {
  // Lin 2004, section 3.1: reference "police killed the gunman"; "police kill the gunman" has
  // LCS 3 of 4 (F = 3/4) and "the gunman kill police" LCS 2 of 4 (F = 1/2).
  CaptionScores s = score_captions({"police kill the gunman", "the gunman kill police"},
                                   {{"police killed the gunman"}, {"police killed the gunman"}});
  EXPECT_NEAR(s.rouge_l_per_sample[0], 0.75, kExact);
  EXPECT_NEAR(s.rouge_l_per_sample[1], 0.5, kExact);
  EXPECT_NEAR(s.rouge_l, 0.625, kExact);
}

TEST(CaptionMetrics, RougeLTakesBestPrecisionAndBestRecallSeparately) {
  // "a b c d" against "a b" (P 2/4, R 2/2) and "a x b x c x d x" (P 4/4, R 4/8): the toolkit
  // combines the best P (1) with the best R (1), giving 1 (toolkit: 1.0).
  CaptionScores s = score_captions({"a b c d"}, {{"a b", "a x b x c x d x"}});
  EXPECT_NEAR(s.rouge_l, 1.0, kExact);
}

TEST(CaptionMetrics, CiderDByHand) {
  // Two images, every reference n-gram in one image only: idf = ln 2 for all n-grams (also for
  // candidate n-grams absent from all references: df is floored at 1).
  // Image 1: "a b" vs "a b": cosine 1 for n = 1, 2; n = 3, 4 have no n-grams (0).
  //   -> 10 * (1 + 1) / 4 = 5.
  // Image 2: "c d" vs "c e": unigram cosine ln2^2 / (sqrt2 ln2)^2 = 1/2, bigrams 0.
  //   -> 10 * 0.5 / 4 = 1.25.
  CaptionScores s = score_captions({"a b", "c d"}, {{"a b"}, {"c e"}});
  EXPECT_NEAR(s.cider_d_per_sample[0], 5.0, kExact);
  EXPECT_NEAR(s.cider_d_per_sample[1], 1.25, kExact);
  EXPECT_NEAR(s.cider_d, 3.125, kExact);  // toolkit: 3.125
}

TEST(CaptionMetrics, CiderDLengthPenaltyAndClipping) {
  // "a b c" vs "a b": unigram cosine 2/sqrt6, bigram 1/sqrt2, no trigram in the reference; the
  // lengths (the toolkit counts bigrams) differ by 1: penalty exp(-1/72), sigma 6.
  CaptionScores s = score_captions({"a b c", "x"}, {{"a b"}, {"y"}});
  const double expected =
      10.0 / 4 * (2 / std::sqrt(6.0) + 1 / std::sqrt(2.0)) * std::exp(-1 / 72.0);
  EXPECT_NEAR(s.cider_d_per_sample[0], expected, kExact);
  EXPECT_NEAR(s.cider_d, 1.8782355985150683, kExact);  // toolkit

  // "a a" vs "a b": the candidate's weight 2 ln2 for "a" is clipped to the reference's ln2, so
  // the unigram term is ln2 * ln2 / (2 ln2 * sqrt2 ln2) = 1/(2 sqrt2), not 1/sqrt2.
  CaptionScores c = score_captions({"a a", "c"}, {{"a b"}, {"d"}});
  EXPECT_NEAR(c.cider_d_per_sample[0], 10.0 / 4 / (2 * std::sqrt(2.0)), kExact);
  EXPECT_NEAR(c.cider_d, 0.4419417382415922, kExact);  // toolkit
}

TEST(CaptionMetrics, TokenisesBeforeScoring) {
  CaptionScores raw = score_captions({"A dog, on the GRASS."}, {{"a dog on the grass"}});
  CaptionScores tokenized = score_tokenized_captions({{"a", "dog", "on", "the", "grass"}},
                                                     {{{"a", "dog", "on", "the", "grass"}}});
  EXPECT_EQ(raw.bleu, tokenized.bleu);
  EXPECT_EQ(raw.rouge_l, 1.0);
}

TEST(CaptionMetrics, BadInputThrowsWithTheReason) {
  auto expect_error = [](auto&& call, const std::string& fragment) {
    try {
      call();
      ADD_FAILURE() << "no error; expected one mentioning \"" << fragment << "\"";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error([] { score_captions({"a", "b"}, {{"a"}}); }, "2 candidates but 1 reference lists");
  expect_error([] { score_captions({}, {}); }, "empty corpus");
  expect_error([] { score_captions({"a", "b"}, {{"a"}, {}}); }, "sample 1 has no reference");
}

// Random captions with case, punctuation, clitics, UTF-8 and odd whitespace; candidates are noisy
// copies of a reference so that higher-order n-grams match too.
void make_random_corpus(uint32_t seed, int samples, std::vector<std::string>& candidates,
                        Corpus& references) {
  static const std::vector<std::string> kWords = {
      "a",       "A",       "man",    "Man's",  "dog", "dogs'",  "sitting", "on",
      "the",     "The",     "table",  "table.", "red", "riding", "bike",    "bike,",
      "street",  "two",     "people", "next",   "to",  "don't",  "isn't",   "(big)",
      "\"old\"", "-",       "--",     "...",    ",",   "café",   "naïve",   "black-and-white",
      "o'clock", "they're", "'s",     "!",      "of",  "in",     "with",    "an"};
  static const std::vector<std::string> kSpaces = {" ", " ", " ", "  ", "\t", " \n "};
  std::mt19937 rng(seed);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  auto join = [&](const std::vector<std::string>& words) {
    std::string s;
    for (size_t i = 0; i < words.size(); ++i)
      s += (i ? kSpaces[pick(kSpaces.size())] : "") + words[i];
    return s;
  };
  for (int i = 0; i < samples; ++i) {
    std::vector<std::vector<std::string>> refs(1 + pick(5));
    for (auto& ref : refs)
      for (size_t n = 1 + pick(14); n > 0; --n) ref.push_back(kWords[pick(kWords.size())]);
    std::vector<std::string> candidate;
    if (pick(10) < 3) {  // unrelated candidate, possibly empty
      for (size_t n = pick(13); n > 0; --n) candidate.push_back(kWords[pick(kWords.size())]);
    } else {
      for (const std::string& w : refs[pick(refs.size())]) {
        if (pick(10) == 0) continue;
        candidate.push_back(pick(10) < 7 ? w : kWords[pick(kWords.size())]);
      }
    }
    candidates.push_back(join(candidate));
    references.emplace_back();
    for (const auto& ref : refs) references.back().push_back(join(ref));
  }
}

TEST(CaptionMetrics, AgreesWithIndependentPythonImplementation) {
  if (!testing::python_available()) GTEST_SKIP() << testing::kPython << " not found";
  for (uint32_t seed : {1u, 2u}) {
    std::vector<std::string> candidates;
    Corpus references;
    make_random_corpus(seed, 300, candidates, references);
    std::vector<std::string> texts = candidates;
    for (const auto& refs : references) texts.insert(texts.end(), refs.begin(), refs.end());

    const auto dir = testing::fresh_temp_dir("metrics");
    std::ofstream(dir / "in.json") << nlohmann::json{
        {"candidates", candidates},
        {"references", references},
        {"texts", texts}}.dump();
    testing::ToolRun run =
        testing::run_python_tool("caption_metrics.py",
                                 testing::shell_quote((dir / "in.json").string()) + " -o " +
                                     testing::shell_quote((dir / "out.json").string()),
                                 dir);
    ASSERT_EQ(run.exit_code, 0) << run.output;
    nlohmann::json python = nlohmann::json::parse(std::ifstream(dir / "out.json"));
    std::filesystem::remove_all(dir);

    for (size_t i = 0; i < texts.size(); ++i)
      ASSERT_EQ(tokenize_caption(texts[i]), python["tokens"][i].get<CaptionTokens>())
          << "text " << i << ": " << texts[i];
    CaptionScores s = score_captions(candidates, references);
    for (int n = 0; n < 4; ++n) EXPECT_NEAR(s.bleu[n], python["bleu"][n].get<double>(), 1e-9);
    EXPECT_NEAR(s.cider_d, python["cider_d"].get<double>(), 1e-9);
    EXPECT_NEAR(s.rouge_l, python["rouge_l"].get<double>(), 1e-9);
    for (size_t i = 0; i < candidates.size(); ++i) {
      EXPECT_NEAR(s.cider_d_per_sample[i], python["cider_d_per_sample"][i].get<double>(), 1e-9);
      EXPECT_NEAR(s.rouge_l_per_sample[i], python["rouge_l_per_sample"][i].get<double>(), 1e-9);
    }
    // The corpus is not degenerate: every metric is well inside (0, 1) or (0, 10).
    EXPECT_GT(s.bleu[3], 0.05);
    EXPECT_GT(s.cider_d, 0.3);
    EXPECT_GT(s.rouge_l, 0.2);
    std::cout << "seed " << seed << ": BLEU-4 " << s.bleu[3] << " CIDEr-D " << s.cider_d
              << " ROUGE-L " << s.rouge_l << "\n";
  }
}

}  // namespace
}  // namespace mue
