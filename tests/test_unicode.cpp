// UTF-8 decoding and the generated Unicode tables. Expected values come from CPython 3.11
// (bytes.decode("utf-8", "replace"), str.lower(), unicodedata 14.0), computed outside the repo.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "io/unicode.h"

namespace mue::unicode {
namespace {

TEST(Unicode, TablesComeFromUnicode14) { EXPECT_STREQ(tables_unicode_version(), "14.0.0"); }

TEST(Unicode, DecodesWellFormedCharacters) {
  const std::string text = "a\u00e9\u20ac\U0001F600";
  const std::vector<std::pair<char32_t, int>> expected = {
      {U'a', 1}, {0xE9, 2}, {0x20AC, 3}, {0x1F600, 4}};
  size_t pos = 0;
  for (const auto& [code_point, length] : expected) {
    const DecodedChar c = decode_utf8(text, pos);
    EXPECT_TRUE(c.valid);
    EXPECT_EQ(c.code_point, code_point);
    EXPECT_EQ(c.length, length);
    pos += c.length;
  }
  EXPECT_EQ(pos, text.size());
}

TEST(Unicode, IllFormedSequencesReportTheirMaximalSubpart) {
  struct Case {
    std::string bytes;
    int length;
  };
  const std::vector<Case> cases = {
      {"\x80", 1},              // stray continuation byte
      {"\xc0\xaf", 1},          // overlong lead byte
      {"\xe0\x80\x80", 1},      // overlong three-byte form
      {"\xed\xa0\x80", 1},      // UTF-16 surrogate
      {"\xf4\x90\x80\x80", 1},  // above U+10FFFF
      {"\xf5\x80", 1},          // lead byte that never occurs
      {"\xe2\x82", 2},          // truncated at the end
      {"\xe2\x82\x41", 2},      // truncated by an ASCII byte ("A")
      {"\xf0\x9f\x98", 3},
  };
  for (const Case& c : cases) {
    const DecodedChar d = decode_utf8(c.bytes, 0);
    EXPECT_FALSE(d.valid) << testing::PrintToString(c.bytes);
    EXPECT_EQ(d.length, c.length) << testing::PrintToString(c.bytes);
  }
}

TEST(Unicode, ReplacesIllFormedBytesLikePython) {
  // (bytes, bytes.decode("utf-8", errors="replace"))
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\xff", "\ufffd"},
      {"abc\xc3", "abc\ufffd"},
      {"\xe2\x82", "\ufffd"},
      {"\xe2\x82\x41", "\ufffdA"},
      {"\xe2(\xa1", "\ufffd(\ufffd"},
      {"\xed\xa0\x80", "\ufffd\ufffd\ufffd"},
      {"\xc0\xaf", "\ufffd\ufffd"},
      {"\xf0\x90\x80", "\ufffd"},
      {"\xf4\x90\x80\x80", "\ufffd\ufffd\ufffd\ufffd"},
      {"\xf0\x9f\x98\x80\x80", "\U0001F600\ufffd"},
      {"caf\xc3\xa9", "caf\u00e9"},
      {"\x80\x80x", "\ufffd\ufffdx"},
      {"\xf8\x88\x80\x80\x80", "\ufffd\ufffd\ufffd\ufffd\ufffd"},
  };
  for (const auto& [bytes, replaced] : cases) {
    EXPECT_EQ(replace_invalid_utf8(bytes), replaced) << testing::PrintToString(bytes);
  }
}

TEST(Unicode, AppendUtf8RoundTripsEveryScalarValue) {
  for (char32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    std::string s;
    append_utf8(s, cp);
    const DecodedChar d = decode_utf8(s, 0);
    ASSERT_TRUE(d.valid) << static_cast<uint32_t>(cp);
    ASSERT_EQ(d.code_point, cp);
    ASSERT_EQ(static_cast<size_t>(d.length), s.size());
  }
}

TEST(Unicode, ClassifiesLettersNumbersAndSpaces) {
  // General categories from unicodedata 14.0.
  for (char32_t cp : {U'a', U'Z', char32_t{0xE9}, char32_t{0x3A3}, char32_t{0x5D0}, char32_t{0x905},
                      char32_t{0x4E00}, char32_t{0xAC00}, char32_t{0x2B0}, char32_t{0x1D400},
                      char32_t{0x20000}}) {
    EXPECT_TRUE(is_letter(cp)) << std::hex << static_cast<uint32_t>(cp);
    EXPECT_FALSE(is_number(cp)) << std::hex << static_cast<uint32_t>(cp);
  }
  for (char32_t cp : {U'0', U'9', char32_t{0xB2}, char32_t{0xBD}, char32_t{0x660}, char32_t{0x2160},
                      char32_t{0xFF10}, char32_t{0x1D7CE}}) {
    EXPECT_TRUE(is_number(cp)) << std::hex << static_cast<uint32_t>(cp);
    EXPECT_FALSE(is_letter(cp)) << std::hex << static_cast<uint32_t>(cp);
  }
  // Marks, punctuation, symbols, format characters and unassigned code points are neither.
  for (char32_t cp : {U'\'', U'_', char32_t{0x301}, char32_t{0x93E}, char32_t{0x200D},
                      char32_t{0xFEFF}, char32_t{0x1F600}, char32_t{0x378}, char32_t{0x10FFFF}}) {
    EXPECT_FALSE(is_letter(cp)) << std::hex << static_cast<uint32_t>(cp);
    EXPECT_FALSE(is_number(cp)) << std::hex << static_cast<uint32_t>(cp);
  }
}

TEST(Unicode, WhiteSpaceIsTheUnicodePropertyAndPythonSpaceIsIsspace) {
  for (char32_t cp : {U' ', U'\t', U'\n', U'\v', U'\f', U'\r', char32_t{0x85}, char32_t{0xA0},
                      char32_t{0x1680}, char32_t{0x2000}, char32_t{0x200A}, char32_t{0x2028},
                      char32_t{0x2029}, char32_t{0x202F}, char32_t{0x205F}, char32_t{0x3000}}) {
    EXPECT_TRUE(is_white_space(cp)) << std::hex << static_cast<uint32_t>(cp);
    EXPECT_TRUE(is_python_space(cp)) << std::hex << static_cast<uint32_t>(cp);
  }
  // str.isspace() also has the information separators; neither has ZWSP, BOM or U+180E.
  for (char32_t cp : {char32_t{0x1C}, char32_t{0x1F}}) {
    EXPECT_FALSE(is_white_space(cp)) << std::hex << static_cast<uint32_t>(cp);
    EXPECT_TRUE(is_python_space(cp)) << std::hex << static_cast<uint32_t>(cp);
  }
  for (char32_t cp : {char32_t{0x200B}, char32_t{0xFEFF}, char32_t{0x180E}, U'a', U'_'}) {
    EXPECT_FALSE(is_white_space(cp)) << std::hex << static_cast<uint32_t>(cp);
    EXPECT_FALSE(is_python_space(cp)) << std::hex << static_cast<uint32_t>(cp);
  }
}

TEST(Unicode, LowersLikePythonStrLower) {
  // (text, text.lower()) from CPython, Final_Sigma cases included.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"HELLO World", "hello world"},
      {"\u039f\u0394\u039f\u03a3", "\u03bf\u03b4\u03bf\u03c2"},
      {"\u03a3\u0391\u03a3 \u03a3\u0391\u03a3.", "\u03c3\u03b1\u03c2 \u03c3\u03b1\u03c2."},
      {"\u03a3", "\u03c3"},
      {"A\u03a3", "a\u03c2"},
      {"A\u03a3b", "a\u03c3b"},
      {"A\u03a3\u0301", "a\u03c2\u0301"},
      {"A\u0301\u03a3", "a\u0301\u03c2"},
      {"\u0130stanbul", "i\u0307stanbul"},
      {"\u00c0\u00c9\u00ce\u00d5\u00dc", "\u00e0\u00e9\u00ee\u00f5\u00fc"},
      {"\u01c5", "\u01c6"},
      {"\uff21\uff22\uff23", "\uff41\uff42\uff43"},
      {"\u216b", "\u217b"},
      {"\u00c6\u00d8\u00c5", "\u00e6\u00f8\u00e5"},
      {"\U00010400", "\U00010428"},
      {"Stra\u00dfe", "stra\u00dfe"},
      {"\u03a9mega", "\u03c9mega"},
      {"bad \xff\xc3 bytes", "bad \xff\xc3 bytes"},
  };
  for (const auto& [text, lower] : cases) {
    EXPECT_EQ(python_lower(text), lower) << testing::PrintToString(text);
  }
}

TEST(Unicode, LowerRunsCoverAlternatingBlocks) {
  // Latin Extended-A alternates upper/lower: U+0100 -> U+0101, U+0101 stays.
  char32_t out[3];
  ASSERT_EQ(lower_code_point(0x100, out), 1);
  EXPECT_EQ(out[0], char32_t{0x101});
  ASSERT_EQ(lower_code_point(0x101, out), 1);
  EXPECT_EQ(out[0], char32_t{0x101});
  ASSERT_EQ(lower_code_point(0x130, out), 2);
  EXPECT_EQ(out[0], U'i');
  EXPECT_EQ(out[1], char32_t{0x307});
}

}  // namespace
}  // namespace mue::unicode
