// OFA's pre_caption / pre_question (data/ofa_dataset.py). Expected outputs were produced by
// OFA's Python functions on CPython 3.11, outside the repo.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "io/text.h"

namespace mue {
namespace {

struct Case {
  std::string text;
  int max_words;
  std::string expected;
};

TEST(Text, PreCaptionMatchesOfa) {
  const std::vector<Case> cases = {
      {"A man riding a horse.", kNoWordLimit, "a man riding a horse."},
      // Only leading ",.!?*#:;~" are stripped, and only before the spaces are.
      {"  ...!!A Man-Riding/a HORSE  ", kNoWordLimit, "...!!a man riding a horse"},
      {"<person> holds a <PERSON>", kNoWordLimit, "person holds a person"},
      {"two  dogs\t\tplay\n\n", kNoWordLimit, "two dogs play"},
      {"a\tb", kNoWordLimit, "a\tb"},
      {"line one\nline two\n", kNoWordLimit, "line one\nline two"},
      {"trailing newline\n", kNoWordLimit, "trailing newline"},
      {",.!?*#:;~ start", kNoWordLimit, "start"},
      {"- leading dash", kNoWordLimit, "leading dash"},
      {"\n\nlead", kNoWordLimit, "lead"},
      {"ends with space \n", kNoWordLimit, "ends with space"},
      {"a \n", kNoWordLimit, "a"},
      {"", 5, ""},
      {"   ", kNoWordLimit, ""},
      // Words are split on single spaces after the runs are collapsed; a tab joins words.
      {"one two three four five", 3, "one two three"},
      {"one two three", 3, "one two three"},
      {"one two three", 0, ""},
      {"a - b", 2, "a b"},
      {"tab\tthen  two", 2, "tab\tthen two"},
      {"a  b  c  d", 2, "a b"},
      // Python's str.lower() and Unicode \s.
      {"\u00dcn\u00efc\u00f6d\u00e9 \u03a3\u039f\u03a6\u039f\u03a3  sentence", kNoWordLimit,
       "\u00fcn\u00efc\u00f6d\u00e9 \u03c3\u03bf\u03c6\u03bf\u03c2 sentence"},
      {"x\u3000\u3000y\u00a0z", kNoWordLimit, "x y\u00a0z"},
      {"a \u001c b", kNoWordLimit, "a b"},
      {"a\u001c\u001cb", kNoWordLimit, "a b"},
      {"wo\u2028rd", kNoWordLimit, "wo\u2028rd"},
      {"\u0130", kNoWordLimit, "i\u0307"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(pre_caption(c.text, c.max_words), c.expected)
        << testing::PrintToString(c.text) << " max_words=" << c.max_words;
  }
}

TEST(Text, PreQuestionKeepsPersonTags) {
  EXPECT_EQ(pre_question("<person> What-is this/that?", kNoWordLimit),
            "<person> what is this that?");
  EXPECT_EQ(pre_question("  How many   dogs?\n", 2), "how many");
}

TEST(Text, SnliHypothesisPreprocessing) {
  // spec 2.1: the premise and hypothesis go through pre_caption with max_src_length = 80.
  std::string long_text;
  for (int i = 0; i < 100; ++i) long_text += "Word" + std::to_string(i) + " ";
  const std::string out = pre_caption(long_text, 80);
  EXPECT_EQ(out.substr(0, 12), "word0 word1 ");
  EXPECT_EQ(out.substr(out.size() - 7), " word79");
}

TEST(Text, IllFormedBytesPassThrough) {
  EXPECT_EQ(pre_caption("Caf\xc3 AU\xff", kNoWordLimit), "caf\xc3 au\xff");
}

}  // namespace
}  // namespace mue
