// GPT-2 byte-level BPE with OFA's fairseq dictionary on top (spec 3.2): text -> GPT-2 BPE ids
// (encoder.json + vocab.bpe, exactly as GPT-2's Python encoder) -> OFA ids (dict.txt).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace mue {

// GPT-2's pre-tokenisation: splits text the way the pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// does under Python's `regex` module (\s = White_Space). The pieces are views into `text`
// and concatenate back to it; ill-formed UTF-8 bytes count as [^\s\p{L}\p{N}].
std::vector<std::string_view> gpt2_pretokenize(std::string_view text);

class Tokenizer {
 public:
  // OFA's task setup appends these after the dictionary (spec 3.2).
  static constexpr int kOfaCodeTokens = 8192;  // <code_0> .. <code_8191>
  static constexpr int kOfaBinTokens = 1000;   // <bin_0> .. <bin_999>
  static constexpr int32_t kBosId = 0, kPadId = 1, kEosId = 2, kUnkId = 3;

  // Loads the three files; `ofa_extra_tokens` appends <mask>, the code and the bin tokens the
  // way OFA's task does (off for a model with its own plain vocabulary). Throws mue::Error
  // naming the file and the reason for a missing, unreadable or malformed file.
  Tokenizer(const std::string& encoder_json_path, const std::string& vocab_bpe_path,
            const std::string& dict_path, bool ofa_extra_tokens = true);
  // The same, from a directory holding encoder.json, vocab.bpe and dict.txt.
  static Tokenizer from_directory(const std::string& dir, bool ofa_extra_tokens = true);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // OFA (fairseq dictionary) ids, without BOS/EOS; GPT-2 ids missing from dict.txt become <unk>.
  std::vector<int32_t> encode(std::string_view text) const;
  // Raw GPT-2 BPE ids. Ill-formed UTF-8 is accepted: those bytes are BPE-encoded as they are.
  std::vector<int32_t> encode_gpt2(std::string_view text) const;

  // OFA ids -> text. Symbols that are not GPT-2 tokens (<s>, <pad>, </s>, <unk>, <mask>,
  // <code_*>, <bin_*>, madeupword*) are skipped; an id outside the vocabulary throws.
  // Bytes that do not form valid UTF-8 become U+FFFD, as in GPT-2's decoder.
  std::string decode(const std::vector<int32_t>& ofa_ids) const;
  // GPT-2 ids -> text (same UTF-8 handling); an unknown id throws.
  std::string decode_gpt2(const std::vector<int32_t>& gpt2_ids) const;

  // Number of OFA ids (59457 for OFA's dictionary with the extra tokens).
  int32_t vocab_size() const { return static_cast<int32_t>(symbols_.size()); }
  // The OFA id of a dictionary symbol ("<s>", "<mask>", "<bin_0>", or a GPT-2 id as "262");
  // throws mue::Error if the dictionary has no such symbol.
  int32_t id_of(std::string_view token) const;
  bool contains(std::string_view token) const;
  // The dictionary symbol of an OFA id; throws if out of range.
  const std::string& symbol(int32_t ofa_id) const;
  // Number of GPT-2 ids (entries of encoder.json).
  int32_t gpt2_vocab_size() const { return static_cast<int32_t>(gpt2_bytes_.size()); }
  // The OFA id of a GPT-2 id (kUnkId when dict.txt lacks it); throws if out of range.
  int32_t ofa_id_of_gpt2(int32_t gpt2_id) const;
  // The raw bytes a GPT-2 id stands for (possibly part of a UTF-8 character, so streaming
  // output can hold bytes back until they complete one); throws if out of range.
  const std::string& gpt2_token_bytes(int32_t gpt2_id) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_symbol;
  };
  struct Cache;

  void load_encoder(const std::string& path);
  void load_merges(const std::string& path);
  void load_dictionary(const std::string& path, bool ofa_extra_tokens);
  int32_t intern_symbol(const std::string& bytes);
  void add_symbol(const std::string& symbol);
  void check_gpt2_id(int32_t gpt2_id, const char* caller) const;
  // Appends the GPT-2 ids of one pre-token (raw bytes) to `out`.
  void bpe(std::string_view piece, std::vector<int32_t>& out) const;

  // GPT-2 side. BPE runs on raw bytes: GPT-2's byte-to-unicode map is a bijection, so merging
  // byte strings is the same as merging its unicode strings. Symbols are interned byte strings
  // (0..255 are the single bytes).
  std::vector<std::string> gpt2_bytes_;                  // GPT-2 id -> token bytes
  std::vector<int32_t> symbol_gpt2_;                     // BPE symbol -> GPT-2 id, or -1
  std::unordered_map<std::string, int32_t> symbol_ids_;  // token bytes -> BPE symbol
  std::unordered_map<uint64_t, Merge> merges_;           // (left << 32 | right) -> merge
  std::string encoder_path_;

  // fairseq dictionary side (spec 3.2).
  std::vector<std::string> symbols_;                       // OFA id -> symbol
  std::unordered_map<std::string, int32_t> symbol_index_;  // symbol -> OFA id
  std::vector<int32_t> gpt2_to_ofa_;                       // GPT-2 id -> OFA id (unk if absent)
  std::vector<int32_t> ofa_to_gpt2_;                       // OFA id -> GPT-2 id, or -1

  std::unique_ptr<Cache> cache_;  // pre-token bytes -> GPT-2 ids; guarded, so encode is const
};

}  // namespace mue
