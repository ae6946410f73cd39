#include "io/unicode.h"

#include <algorithm>
#include <iterator>
#include <vector>

namespace mue::unicode {
namespace {

struct CodePointRange {
  char32_t first;
  char32_t last;
};

// Code points first, first + stride, ..., last lower-case to themselves plus delta.
struct LowerRun {
  char32_t first;
  char32_t last;
  int32_t delta;
  int32_t stride;
};

struct LowerSpecial {
  char32_t code_point;
  int count;
  char32_t lower[3];
};

#include "io/unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodePointRange (&ranges)[N], char32_t cp) {
  auto after =
      std::upper_bound(std::begin(ranges), std::end(ranges), cp,
                       [](char32_t value, const CodePointRange& r) { return value < r.first; });
  return after != std::begin(ranges) && cp <= std::prev(after)->last;
}

constexpr char32_t kReplacementChar = 0xFFFD;
constexpr char32_t kCapitalSigma = 0x3A3;
constexpr char32_t kSmallSigma = 0x3C3;
constexpr char32_t kFinalSigma = 0x3C2;

}  // namespace

DecodedChar decode_utf8(std::string_view text, size_t pos) {
  const auto b0 = static_cast<uint8_t>(text[pos]);
  if (b0 < 0x80) return {b0, 1, true};
  int continuation_bytes;
  char32_t cp;
  // Allowed range of the second byte; it excludes overlong forms, surrogates and > U+10FFFF
  // (Unicode Table 3-7, well-formed UTF-8 byte sequences).
  uint8_t low = 0x80, high = 0xBF;
  if (b0 < 0xC2) {
    return {b0, 1, false};
  } else if (b0 < 0xE0) {
    continuation_bytes = 1;
    cp = b0 & 0x1F;
  } else if (b0 < 0xF0) {
    continuation_bytes = 2;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) low = 0xA0;
    if (b0 == 0xED) high = 0x9F;
  } else if (b0 < 0xF5) {
    continuation_bytes = 3;
    cp = b0 & 0x07;
    if (b0 == 0xF0) low = 0x90;
    if (b0 == 0xF4) high = 0x8F;
  } else {
    return {b0, 1, false};
  }
  int length = 1;
  for (int k = 1; k <= continuation_bytes; ++k) {
    if (pos + k >= text.size()) return {b0, length, false};
    const auto b = static_cast<uint8_t>(text[pos + k]);
    if (b < low || b > high) return {b0, length, false};
    cp = (cp << 6) | (b & 0x3F);
    ++length;
    low = 0x80;
    high = 0xBF;
  }
  return {cp, length, true};
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string replace_invalid_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t pos = 0; pos < bytes.size();) {
    const DecodedChar c = decode_utf8(bytes, pos);
    if (c.valid) {
      out.append(bytes.substr(pos, c.length));
    } else {
      append_utf8(out, kReplacementChar);
    }
    pos += c.length;
  }
  return out;
}

bool is_letter(char32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return in_ranges(kLetterRanges, cp);
}

bool is_number(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(kNumberRanges, cp);
}

bool is_white_space(char32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
  return in_ranges(kWhiteSpaceRanges, cp);
}

bool is_python_space(char32_t cp) { return in_ranges(kPythonSpaceRanges, cp); }

bool is_case_ignorable(char32_t cp) { return in_ranges(kCaseIgnorableRanges, cp); }

bool is_cased(char32_t cp) { return in_ranges(kCasedRanges, cp); }

int lower_code_point(char32_t cp, char32_t out[3]) {
  if (cp < 0x80) {
    out[0] = (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
    return 1;
  }
  for (const LowerSpecial& special : kLowerSpecials) {
    if (special.code_point == cp) {
      std::copy(special.lower, special.lower + special.count, out);
      return special.count;
    }
  }
  auto after = std::upper_bound(std::begin(kLowerRuns), std::end(kLowerRuns), cp,
                                [](char32_t value, const LowerRun& r) { return value < r.first; });
  out[0] = cp;
  if (after != std::begin(kLowerRuns)) {
    const LowerRun& run = *std::prev(after);
    if (cp <= run.last && (cp - run.first) % run.stride == 0) {
      out[0] = static_cast<char32_t>(static_cast<int32_t>(cp) + run.delta);
    }
  }
  return 1;
}

std::string python_lower(std::string_view text) {
  std::vector<DecodedChar> chars;
  for (size_t pos = 0; pos < text.size();) {
    chars.push_back(decode_utf8(text, pos));
    pos += chars.back().length;
  }
  // Ill-formed bytes are neither cased nor case-ignorable.
  auto ignorable = [&](size_t i) {
    return chars[i].valid && is_case_ignorable(chars[i].code_point);
  };
  auto cased = [&](size_t i) { return chars[i].valid && is_cased(chars[i].code_point); };

  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  for (size_t i = 0; i < chars.size(); pos += chars[i].length, ++i) {
    const DecodedChar& c = chars[i];
    if (!c.valid) {
      out.append(text.substr(pos, c.length));
      continue;
    }
    if (c.code_point == kCapitalSigma) {
      // Final_Sigma (CPython handle_capital_sigma): cased (ignorable)* Σ !((ignorable)* cased).
      size_t j = i;
      while (j > 0 && ignorable(j - 1)) --j;
      bool final_sigma = j > 0 && cased(j - 1);
      if (final_sigma) {
        size_t k = i + 1;
        while (k < chars.size() && ignorable(k)) ++k;
        final_sigma = k == chars.size() || !cased(k);
      }
      append_utf8(out, final_sigma ? kFinalSigma : kSmallSigma);
      continue;
    }
    char32_t lower[3];
    const int count = lower_code_point(c.code_point, lower);
    for (int k = 0; k < count; ++k) append_utf8(out, lower[k]);
  }
  return out;
}

const char* tables_unicode_version() { return kTablesUnicodeVersion; }

}  // namespace mue::unicode
