// OFA's text preprocessing (data/ofa_dataset.py pre_caption / pre_question; spec 2.1), applied to
// captions, VE premises and hypotheses, and questions before BPE encoding.
#pragma once

#include <string>
#include <string_view>

namespace mue {

// A max_words meaning "no truncation" (Python's max_words=None).
inline constexpr int kNoWordLimit = -1;

// OFA's pre_caption: Python's str.lower(); strip leading ",.!?*#:;~"; '-' and '/' -> ' ';
// "<person>" -> "person"; every run of 2+ whitespace characters (Python's \s) -> one space;
// strip trailing newlines, then leading/trailing spaces; keep the first `max_words` words
// (split on single spaces). Input is UTF-8; ill-formed bytes pass through unchanged.
std::string pre_caption(std::string_view text, int max_words);

// OFA's pre_question: the same without the "<person>" replacement.
std::string pre_question(std::string_view text, int max_words);

}  // namespace mue
