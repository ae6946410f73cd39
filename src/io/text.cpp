#include "io/text.h"

#include <vector>

#include "io/unicode.h"

namespace mue {
namespace {

void replace_all(std::string& text, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(text.size());
  size_t start = 0;
  for (size_t hit; (hit = text.find(from, start)) != std::string::npos; start = hit + from.size()) {
    out.append(text, start, hit - start);
    out.append(to);
  }
  out.append(text, start, std::string::npos);
  text.swap(out);
}

// re.sub(r"\s{2,}", " ", text) with Python's Unicode \s (str.isspace).
std::string collapse_whitespace_runs(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    size_t run_end = pos;
    int run_length = 0;
    while (run_end < text.size()) {
      const unicode::DecodedChar c = unicode::decode_utf8(text, run_end);
      if (!c.valid || !unicode::is_python_space(c.code_point)) break;
      run_end += c.length;
      ++run_length;
    }
    if (run_length >= 2) {
      out += ' ';
      pos = run_end;
    } else if (run_length == 1) {
      out.append(text.substr(pos, run_end - pos));
      pos = run_end;
    } else {
      const unicode::DecodedChar c = unicode::decode_utf8(text, pos);
      out.append(text.substr(pos, c.length));
      pos += c.length;
    }
  }
  return out;
}

std::string preprocess(std::string_view text, int max_words, bool replace_person) {
  // OFA data/ofa_dataset.py, step by step.
  std::string s = unicode::python_lower(text);
  const size_t first_kept = s.find_first_not_of(",.!?*#:;~");
  s.erase(0, first_kept == std::string::npos ? s.size() : first_kept);
  replace_all(s, "-", " ");
  replace_all(s, "/", " ");
  if (replace_person) replace_all(s, "<person>", "person");
  s = collapse_whitespace_runs(s);
  while (!s.empty() && s.back() == '\n') s.pop_back();  // rstrip('\n')
  const size_t begin = s.find_first_not_of(' ');        // strip(' ')
  if (begin == std::string::npos) {
    s.clear();
  } else {
    s = s.substr(begin, s.find_last_not_of(' ') - begin + 1);
  }
  if (max_words < 0) return s;
  // split(' ') and keep the first max_words words.
  size_t words = 1;
  for (size_t pos = 0; pos < s.size(); ++pos) {
    if (s[pos] != ' ') continue;
    if (static_cast<int>(words) == max_words) return s.substr(0, pos);
    ++words;
  }
  return max_words == 0 ? std::string() : s;
}

}  // namespace

std::string pre_caption(std::string_view text, int max_words) {
  return preprocess(text, max_words, /*replace_person=*/true);
}

std::string pre_question(std::string_view text, int max_words) {
  return preprocess(text, max_words, /*replace_person=*/false);
}

}  // namespace mue
