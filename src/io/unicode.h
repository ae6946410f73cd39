// UTF-8 decoding and the few Unicode properties the tokenizer and OFA's text preprocessing need
// (GPT-2's \p{L}, \p{N}, \s; Python's str.isspace and str.lower). The property tables are
// generated from Python's unicodedata by tools/gen_unicode_tables.py (unicode_tables.inc).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mue::unicode {

// One step of UTF-8 decoding at a byte offset.
struct DecodedChar {
  char32_t code_point;  // valid: the scalar value; invalid: the first byte's value
  int length;           // bytes consumed, >= 1
  bool valid;
};

// Decodes the character starting at `pos` (< text.size()). An ill-formed sequence (stray
// continuation, overlong form, surrogate, beyond U+10FFFF, truncated) is reported as invalid
// with `length` = its maximal subpart, the unit Python's decoder replaces with one U+FFFD.
DecodedChar decode_utf8(std::string_view text, size_t pos);

// Appends the UTF-8 encoding of a scalar value.
void append_utf8(std::string& out, char32_t code_point);

// Python's bytes.decode("utf-8", errors="replace"): each maximal ill-formed subpart -> U+FFFD.
std::string replace_invalid_utf8(std::string_view bytes);

// General_Category L* (GPT-2's \p{L}).
bool is_letter(char32_t code_point);
// General_Category N* (GPT-2's \p{N}).
bool is_number(char32_t code_point);
// The White_Space property: \s in the `regex` module that GPT-2's encoder uses.
bool is_white_space(char32_t code_point);
// str.isspace(): \s in Python's `re` on str patterns (OFA's pre_caption).
bool is_python_space(char32_t code_point);
// Case_Ignorable and Cased as CPython's str.lower() uses them for Final_Sigma; `is_cased` is
// meaningful only for characters that are not case-ignorable.
bool is_case_ignorable(char32_t code_point);
bool is_cased(char32_t code_point);

// str.lower() of one code point out of context: writes 1 to 3 code points to `out` and returns
// how many. (U+03A3 gives U+03C3 here; python_lower applies the Final_Sigma context.)
int lower_code_point(char32_t code_point, char32_t out[3]);

// Python's str.lower() on UTF-8 text, Final_Sigma included. Ill-formed bytes pass through.
std::string python_lower(std::string_view text);

// The Unicode version the tables were generated from ("14.0.0").
const char* tables_unicode_version();

}  // namespace mue::unicode
