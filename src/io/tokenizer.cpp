#include "io/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>

#include "io/unicode.h"
#include "mue/tensor.h"

namespace mue {
namespace {

// ---- GPT-2's byte <-> unicode alphabet ----

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
// are given the code points 256, 257, ... in byte order, so no token contains space/control.
struct ByteAlphabet {
  char32_t byte_to_char[256];
  int16_t char_to_byte[512];  // every mapped code point is below 256 + 68

  ByteAlphabet() {
    std::fill(std::begin(char_to_byte), std::end(char_to_byte), int16_t{-1});
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      byte_to_char[b] = printable ? static_cast<char32_t>(b) : next++;
      char_to_byte[byte_to_char[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet;
  return alphabet;
}

// A token as encoder.json / vocab.bpe spell it (UTF-8 of the byte alphabet) -> raw bytes.
// Returns false if a character is not in the alphabet.
bool alphabet_to_bytes(std::string_view spelled, std::string& bytes) {
  const ByteAlphabet& alphabet = byte_alphabet();
  bytes.clear();
  for (size_t pos = 0; pos < spelled.size();) {
    const unicode::DecodedChar c = unicode::decode_utf8(spelled, pos);
    if (!c.valid || c.code_point >= 512 || alphabet.char_to_byte[c.code_point] < 0) return false;
    bytes += static_cast<char>(alphabet.char_to_byte[c.code_point]);
    pos += c.length;
  }
  return true;
}

// Raw bytes -> GPT-2's spelling, for error messages.
std::string bytes_to_alphabet(std::string_view bytes) {
  std::string spelled;
  for (unsigned char b : bytes) unicode::append_utf8(spelled, byte_alphabet().byte_to_char[b]);
  return spelled;
}

// ---- files ----

std::string read_file(const std::string& path, const char* what) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    throw Error(std::string(what) + " " + path + ": cannot open: " + std::strerror(errno));
  }
  std::string content;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) content.append(buffer, n);
  const bool failed = std::ferror(file) != 0;
  const int read_errno = errno;
  std::fclose(file);
  if (failed) {
    throw Error(std::string(what) + " " + path + ": read failed: " + std::strerror(read_errno));
  }
  return content;
}

bool is_valid_utf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const unicode::DecodedChar c = unicode::decode_utf8(text, pos);
    if (!c.valid) return false;
    pos += c.length;
  }
  return true;
}

// Splits on '\n'; `ends_with_newline` says whether the last line was terminated.
std::vector<std::string_view> split_lines(std::string_view content, bool& ends_with_newline) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start < content.size()) {
    const size_t end = content.find('\n', start);
    if (end == std::string_view::npos) {
      lines.push_back(content.substr(start));
      break;
    }
    lines.push_back(content.substr(start, end - start));
    start = end + 1;
  }
  ends_with_newline = !content.empty() && content.back() == '\n';
  return lines;
}

// Python's str.rstrip() with no argument.
std::string_view rstrip_python_space(std::string_view text) {
  size_t content_end = 0;
  for (size_t pos = 0; pos < text.size();) {
    const unicode::DecodedChar c = unicode::decode_utf8(text, pos);
    pos += c.length;
    if (!c.valid || !unicode::is_python_space(c.code_point)) content_end = pos;
  }
  return text.substr(0, content_end);
}

std::string in_quotes(std::string_view text) {
  constexpr size_t kMaxShown = 80;
  std::string shown(text.substr(0, kMaxShown));
  if (text.size() > kMaxShown) shown += "...";
  return "\"" + shown + "\"";
}

// ---- GPT-2 pre-tokenisation ----

enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

struct TextChar {
  size_t offset;
  CharClass cls;
  char32_t code_point;  // 0 for ill-formed bytes
};

// Ill-formed bytes are "other" ([^\s\p{L}\p{N}]): what GPT-2's regex sees for them after a
// surrogateescape decode, so they stay bytes and group with neighbouring punctuation.
std::vector<TextChar> classify(std::string_view text) {
  std::vector<TextChar> chars;
  chars.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const unicode::DecodedChar c = unicode::decode_utf8(text, pos);
    CharClass cls = CharClass::kOther;
    char32_t cp = 0;
    if (c.valid) {
      cp = c.code_point;
      if (unicode::is_letter(cp)) {
        cls = CharClass::kLetter;
      } else if (unicode::is_number(cp)) {
        cls = CharClass::kNumber;
      } else if (unicode::is_white_space(cp)) {
        cls = CharClass::kSpace;
      }
    }
    chars.push_back({pos, cls, cp});
    pos += c.length;
  }
  return chars;
}

// Length in characters of a contraction ('s|'t|'re|'ve|'m|'ll|'d) starting at i, or 0.
size_t contraction_length(const std::vector<TextChar>& chars, size_t i) {
  if (chars[i].code_point != U'\'' || i + 1 >= chars.size()) return 0;
  const char32_t c1 = chars[i + 1].code_point;
  if (c1 == U's' || c1 == U't' || c1 == U'm' || c1 == U'd') return 2;
  if (i + 2 >= chars.size()) return 0;
  const char32_t c2 = chars[i + 2].code_point;
  if ((c1 == U'r' && c2 == U'e') || (c1 == U'v' && c2 == U'e') || (c1 == U'l' && c2 == U'l')) {
    return 3;
  }
  return 0;
}

}  // namespace

std::vector<std::string_view> gpt2_pretokenize(std::string_view text) {
  // GPT-2's pattern, alternatives tried in order at each position:
  //   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  const std::vector<TextChar> chars = classify(text);
  const size_t n = chars.size();
  std::vector<std::string_view> pieces;
  auto emit = [&](size_t begin, size_t end) {
    const size_t byte_begin = chars[begin].offset;
    const size_t byte_end = end < n ? chars[end].offset : text.size();
    pieces.push_back(text.substr(byte_begin, byte_end - byte_begin));
  };
  size_t i = 0;
  while (i < n) {
    if (const size_t length = contraction_length(chars, i); length > 0) {
      emit(i, i + length);
      i += length;
      continue;
    }
    // " ?X+" for the letter, number and other classes: one optional leading U+0020.
    size_t run_start = i;
    if (chars[i].code_point == U' ' && i + 1 < n && chars[i + 1].cls != CharClass::kSpace) {
      run_start = i + 1;
    }
    const CharClass cls = chars[run_start].cls;
    if (cls != CharClass::kSpace) {
      size_t end = run_start + 1;
      while (end < n && chars[end].cls == cls) ++end;
      emit(i, end);
      i = end;
      continue;
    }
    // Whitespace: \s+(?!\S) takes the run but leaves its last character when a non-space
    // follows (that one then prefixes the next word if it is U+0020); a single whitespace
    // character before a non-space is taken by \s+.
    size_t end = i + 1;
    while (end < n && chars[end].cls == CharClass::kSpace) ++end;
    if (end < n && end - i >= 2) --end;
    emit(i, end);
    i = end;
  }
  return pieces;
}

struct Tokenizer::Cache {
  static constexpr size_t kMaxEntries = 1 << 16;  // cleared when full, so memory stays bounded
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<int32_t>> ids;
};

Tokenizer::Tokenizer(const std::string& encoder_json_path, const std::string& vocab_bpe_path,
                     const std::string& dict_path, bool ofa_extra_tokens)
    : cache_(std::make_unique<Cache>()) {
  load_encoder(encoder_json_path);
  load_merges(vocab_bpe_path);
  load_dictionary(dict_path, ofa_extra_tokens);
}

Tokenizer Tokenizer::from_directory(const std::string& dir, bool ofa_extra_tokens) {
  const std::string prefix = dir.empty() || dir.back() == '/' ? dir : dir + "/";
  return Tokenizer(prefix + "encoder.json", prefix + "vocab.bpe", prefix + "dict.txt",
                   ofa_extra_tokens);
}

Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

int32_t Tokenizer::intern_symbol(const std::string& bytes) {
  auto [it, inserted] = symbol_ids_.try_emplace(bytes, static_cast<int32_t>(symbol_ids_.size()));
  return it->second;
}

void Tokenizer::load_encoder(const std::string& path) {
  encoder_path_ = path;
  const std::string content = read_file(path, "encoder.json");
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(content);
  } catch (const nlohmann::json::exception& e) {
    throw Error("encoder.json " + path + ": not valid JSON: " + e.what());
  }
  if (!json.is_object() || json.empty()) {
    throw Error("encoder.json " + path + ": expected a non-empty object of token -> id");
  }
  gpt2_bytes_.assign(json.size(), std::string());
  std::vector<bool> seen(json.size(), false);
  std::string bytes;
  for (const auto& [token, value] : json.items()) {
    if (!value.is_number_integer()) {
      throw Error("encoder.json " + path + ": the id of token " + in_quotes(token) +
                  " is not an integer");
    }
    const int64_t id = value.get<int64_t>();
    if (id < 0 || id >= static_cast<int64_t>(json.size())) {
      throw Error("encoder.json " + path + ": token " + in_quotes(token) + " has id " +
                  std::to_string(id) + ", outside 0.." + std::to_string(json.size() - 1) +
                  " (ids must number the tokens densely)");
    }
    if (seen[id]) {
      throw Error("encoder.json " + path + ": id " + std::to_string(id) +
                  " is given to more than one token (" + in_quotes(token) + " and another)");
    }
    if (!alphabet_to_bytes(token, bytes) || bytes.empty()) {
      throw Error("encoder.json " + path + ": token " + in_quotes(token) +
                  " is not spelled in GPT-2's byte alphabet");
    }
    seen[id] = true;
    gpt2_bytes_[id] = bytes;
  }
  // The 256 single bytes are BPE's starting symbols 0..255.
  symbol_ids_.clear();
  for (int b = 0; b < 256; ++b) intern_symbol(std::string(1, static_cast<char>(b)));
}

void Tokenizer::load_merges(const std::string& path) {
  const std::string content = read_file(path, "vocab.bpe");
  if (!is_valid_utf8(content)) throw Error("vocab.bpe " + path + ": not valid UTF-8");
  bool ends_with_newline = false;
  const std::vector<std::string_view> lines = split_lines(content, ends_with_newline);
  if (lines.empty() || lines[0].substr(0, 8) != "#version") {
    throw Error("vocab.bpe " + path + ": line 1 is not the \"#version: ...\" header");
  }
  // GPT-2's loader reads split("\n")[1:-1], which silently drops an unterminated last line.
  if (!ends_with_newline) {
    throw Error("vocab.bpe " + path +
                ": the last line has no newline (GPT-2's loader would drop that merge)");
  }
  merges_.clear();
  merges_.reserve(lines.size());
  std::string left_bytes, right_bytes;
  for (size_t line_index = 1; line_index < lines.size(); ++line_index) {
    std::string_view line = lines[line_index];
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const std::string where =
        "vocab.bpe " + path + ": line " + std::to_string(line_index + 1) + " " + in_quotes(line);
    const size_t space = line.find(' ');
    if (space == std::string_view::npos || space == 0 || space + 1 >= line.size() ||
        line.find_first_of(" \t", space + 1) != std::string_view::npos) {
      throw Error(where + ": expected two symbols separated by one space");
    }
    if (!alphabet_to_bytes(line.substr(0, space), left_bytes) ||
        !alphabet_to_bytes(line.substr(space + 1), right_bytes)) {
      throw Error(where + ": a symbol is not spelled in GPT-2's byte alphabet");
    }
    const int32_t left = intern_symbol(left_bytes);
    const int32_t right = intern_symbol(right_bytes);
    const int32_t merged = intern_symbol(left_bytes + right_bytes);
    // Rank = position among the merges; a repeated pair keeps its last rank, like Python's
    // dict(zip(merges, range(...))).
    const uint64_t key = (static_cast<uint64_t>(left) << 32) | static_cast<uint32_t>(right);
    merges_[key] = Merge{static_cast<int32_t>(line_index - 1), merged};
  }
  // Link every BPE symbol to its GPT-2 id; a symbol that encoder.json lacks fails only if a
  // word actually ends on it (as GPT-2's KeyError would).
  std::unordered_map<std::string_view, int32_t> id_of_bytes;
  id_of_bytes.reserve(gpt2_bytes_.size());
  for (size_t id = 0; id < gpt2_bytes_.size(); ++id) {
    id_of_bytes.emplace(gpt2_bytes_[id], static_cast<int32_t>(id));
  }
  symbol_gpt2_.assign(symbol_ids_.size(), -1);
  for (const auto& [bytes, symbol] : symbol_ids_) {
    if (auto it = id_of_bytes.find(bytes); it != id_of_bytes.end()) {
      symbol_gpt2_[symbol] = it->second;
    }
  }
}

void Tokenizer::add_symbol(const std::string& symbol) {
  // fairseq Dictionary.add_symbol: an existing symbol keeps its id.
  if (symbol_index_.count(symbol) != 0) return;
  symbol_index_.emplace(symbol, static_cast<int32_t>(symbols_.size()));
  symbols_.push_back(symbol);
}

void Tokenizer::load_dictionary(const std::string& path, bool ofa_extra_tokens) {
  const std::string content = read_file(path, "dict.txt");
  if (!is_valid_utf8(content)) throw Error("dict.txt " + path + ": not valid UTF-8");
  symbols_.clear();
  symbol_index_.clear();
  // spec 3.2: fairseq's four specials come first.
  for (const char* special : {"<s>", "<pad>", "</s>", "<unk>"}) add_symbol(special);

  bool ends_with_newline = false;
  const std::vector<std::string_view> lines = split_lines(content, ends_with_newline);
  for (size_t line_index = 0; line_index < lines.size(); ++line_index) {
    // fairseq add_from_file: line.rstrip().rsplit(" ", 1) -> "<symbol> <count>
    // [#fairseq:overwrite]".
    const std::string_view line = rstrip_python_space(lines[line_index]);
    const std::string where =
        "dict.txt " + path + ": line " + std::to_string(line_index + 1) + " " + in_quotes(line);
    size_t space = line.rfind(' ');
    if (space == std::string_view::npos) {
      throw Error(where + ": expected \"<symbol> <count> [#fairseq:overwrite]\"");
    }
    std::string_view field = line.substr(space + 1);
    std::string_view word = line.substr(0, space);
    bool overwrite = false;
    if (field == "#fairseq:overwrite") {
      overwrite = true;
      space = word.rfind(' ');
      if (space == std::string_view::npos) {
        throw Error(where + ": expected \"<symbol> <count> #fairseq:overwrite\"");
      }
      field = word.substr(space + 1);
      word = word.substr(0, space);
    }
    std::string_view digits = field;
    if (!digits.empty() && (digits[0] == '+' || digits[0] == '-')) digits.remove_prefix(1);
    int64_t count = 0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), count);
    if (digits.empty() || error != std::errc() || end != digits.data() + digits.size()) {
      throw Error(where + ": the count " + in_quotes(field) + " is not an integer");
    }
    const std::string symbol(word);
    auto existing = symbol_index_.find(symbol);
    if (existing != symbol_index_.end() && !overwrite) {
      throw Error(where + ": duplicate symbol " + in_quotes(symbol) +
                  " (fairseq needs #fairseq:overwrite for that)");
    }
    // With overwrite fairseq appends a new id and points the symbol at it.
    symbol_index_[symbol] = static_cast<int32_t>(symbols_.size());
    symbols_.push_back(symbol);
  }
  if (ofa_extra_tokens) {
    // spec 3.2 / OFA tasks/ofa_task.py setup_task.
    add_symbol("<mask>");
    for (int i = 0; i < kOfaCodeTokens; ++i) add_symbol("<code_" + std::to_string(i) + ">");
    for (int i = 0; i < kOfaBinTokens; ++i) add_symbol("<bin_" + std::to_string(i) + ">");
  }

  // GPT-2 id -> OFA id through the id's decimal string (fairseq encode_line on the BPE output).
  gpt2_to_ofa_.assign(gpt2_bytes_.size(), kUnkId);
  for (size_t id = 0; id < gpt2_bytes_.size(); ++id) {
    if (auto it = symbol_index_.find(std::to_string(id)); it != symbol_index_.end()) {
      gpt2_to_ofa_[id] = it->second;
    }
  }
  // OFA id -> GPT-2 id for every symbol that is a number naming a GPT-2 token (fairseq's
  // decode applies int() to those); every other symbol is a special one.
  ofa_to_gpt2_.assign(symbols_.size(), -1);
  for (size_t ofa_id = 0; ofa_id < symbols_.size(); ++ofa_id) {
    const std::string& symbol = symbols_[ofa_id];
    int64_t gpt2_id = 0;
    const auto [end, error] =
        std::from_chars(symbol.data(), symbol.data() + symbol.size(), gpt2_id);
    if (!symbol.empty() && error == std::errc() && end == symbol.data() + symbol.size() &&
        gpt2_id >= 0 && gpt2_id < static_cast<int64_t>(gpt2_bytes_.size()) && symbol[0] != '-') {
      ofa_to_gpt2_[ofa_id] = static_cast<int32_t>(gpt2_id);
    }
  }
}

void Tokenizer::bpe(std::string_view piece, std::vector<int32_t>& out) const {
  // GPT-2's bpe(): repeatedly merge every occurrence (left to right) of the adjacent pair with
  // the lowest rank, until no adjacent pair has a rank.
  std::vector<int32_t> word(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) word[i] = static_cast<unsigned char>(piece[i]);
  std::vector<int32_t> merged_word;
  merged_word.reserve(word.size());
  while (word.size() > 1) {
    const Merge* best = nullptr;
    uint64_t best_key = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      const uint64_t key =
          (static_cast<uint64_t>(word[i]) << 32) | static_cast<uint32_t>(word[i + 1]);
      auto it = merges_.find(key);
      if (it != merges_.end() && (best == nullptr || it->second.rank < best->rank)) {
        best = &it->second;
        best_key = key;
      }
    }
    if (best == nullptr) break;
    const auto first = static_cast<int32_t>(best_key >> 32);
    const auto second = static_cast<int32_t>(best_key & 0xFFFFFFFFu);
    merged_word.clear();
    for (size_t i = 0; i < word.size();) {
      if (word[i] == first && i + 1 < word.size() && word[i + 1] == second) {
        merged_word.push_back(best->merged_symbol);
        i += 2;
      } else {
        merged_word.push_back(word[i]);
        i += 1;
      }
    }
    word.swap(merged_word);
  }
  for (int32_t symbol : word) {
    const int32_t id = symbol_gpt2_[symbol];
    if (id < 0) {
      throw Error("encoder.json " + encoder_path_ + ": no entry for the BPE token of " +
                  in_quotes(bytes_to_alphabet(piece)) + " (vocab.bpe and encoder.json disagree)");
    }
    out.push_back(id);
  }
}

std::vector<int32_t> Tokenizer::encode_gpt2(std::string_view text) const {
  std::vector<int32_t> ids;
  std::vector<int32_t> piece_ids;
  for (std::string_view piece : gpt2_pretokenize(text)) {
    std::string key(piece);
    {
      std::lock_guard<std::mutex> lock(cache_->mutex);
      if (auto it = cache_->ids.find(key); it != cache_->ids.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        continue;
      }
    }
    piece_ids.clear();
    bpe(piece, piece_ids);
    ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
    std::lock_guard<std::mutex> lock(cache_->mutex);
    if (cache_->ids.size() >= Cache::kMaxEntries) cache_->ids.clear();
    cache_->ids.emplace(std::move(key), piece_ids);
  }
  return ids;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids = encode_gpt2(text);
  for (int32_t& id : ids) id = gpt2_to_ofa_[id];
  return ids;
}

std::string Tokenizer::decode_gpt2(const std::vector<int32_t>& gpt2_ids) const {
  std::string bytes;
  for (int32_t id : gpt2_ids) {
    check_gpt2_id(id, "decode_gpt2");
    bytes += gpt2_bytes_[id];
  }
  return unicode::replace_invalid_utf8(bytes);
}

std::string Tokenizer::decode(const std::vector<int32_t>& ofa_ids) const {
  std::string bytes;
  for (int32_t id : ofa_ids) {
    if (id < 0 || id >= vocab_size()) {
      throw Error("Tokenizer::decode: id " + std::to_string(id) +
                  " is outside the vocabulary (size " + std::to_string(vocab_size()) + ")");
    }
    if (const int32_t gpt2_id = ofa_to_gpt2_[id]; gpt2_id >= 0) bytes += gpt2_bytes_[gpt2_id];
  }
  return unicode::replace_invalid_utf8(bytes);
}

int32_t Tokenizer::id_of(std::string_view token) const {
  auto it = symbol_index_.find(std::string(token));
  if (it == symbol_index_.end()) {
    throw Error("Tokenizer::id_of: the dictionary has no symbol " + in_quotes(token));
  }
  return it->second;
}

bool Tokenizer::contains(std::string_view token) const {
  return symbol_index_.count(std::string(token)) != 0;
}

const std::string& Tokenizer::symbol(int32_t ofa_id) const {
  if (ofa_id < 0 || ofa_id >= vocab_size()) {
    throw Error("Tokenizer::symbol: id " + std::to_string(ofa_id) +
                " is outside the vocabulary (size " + std::to_string(vocab_size()) + ")");
  }
  return symbols_[ofa_id];
}

void Tokenizer::check_gpt2_id(int32_t gpt2_id, const char* caller) const {
  if (gpt2_id < 0 || gpt2_id >= gpt2_vocab_size()) {
    throw Error(std::string("Tokenizer::") + caller + ": id " + std::to_string(gpt2_id) +
                " is outside the GPT-2 vocabulary (size " + std::to_string(gpt2_vocab_size()) +
                ")");
  }
}

int32_t Tokenizer::ofa_id_of_gpt2(int32_t gpt2_id) const {
  check_gpt2_id(gpt2_id, "ofa_id_of_gpt2");
  return gpt2_to_ofa_[gpt2_id];
}

const std::string& Tokenizer::gpt2_token_bytes(int32_t gpt2_id) const {
  check_gpt2_id(gpt2_id, "gpt2_token_bytes");
  return gpt2_bytes_[gpt2_id];
}

}  // namespace mue
