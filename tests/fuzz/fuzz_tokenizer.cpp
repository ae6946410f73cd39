// Fuzzes OFA's text cleaning and the tokenizer with the real BPE files (../shared/ofa-bpe, or
// $MUE_FUZZ_BPE_DIR; the default model's own vocabulary when neither is there): encode any
// bytes, decode the ids back, and decode arbitrary ids.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "io/text.h"
#include "io/tokenizer.h"
#include "io/unicode.h"
#include "mue/tensor.h"

namespace {

const mue::Tokenizer& tokenizer() {
  static const mue::Tokenizer t = [] {
    namespace fs = std::filesystem;
    const fs::path source = MUE_SOURCE_DIR;
    const char* env = std::getenv("MUE_FUZZ_BPE_DIR");
    const fs::path shared = env ? fs::path(env) : source / ".." / "shared" / "ofa-bpe";
    if (fs::exists(shared / "encoder.json")) return mue::Tokenizer::from_directory(shared);
    return mue::Tokenizer::from_directory((source / "models" / "mue-scenes-small").string(),
                                          /*ofa_extra_tokens=*/false);
  }();
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const mue::Tokenizer& tok = tokenizer();
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  // The pre-tokens concatenate back to the text.
  std::string joined;
  for (std::string_view piece : mue::gpt2_pretokenize(text)) joined += piece;
  if (joined != text) std::abort();

  // GPT-2 BPE is lossless on bytes; decoding replaces ill-formed UTF-8 with U+FFFD, as encoding
  // the same text with the replacements made first would.
  const std::vector<int32_t> gpt2 = tok.encode_gpt2(text);
  if (tok.decode_gpt2(gpt2) != mue::unicode::replace_invalid_utf8(text)) std::abort();

  const std::vector<int32_t> ofa = tok.encode(text);
  for (int32_t id : ofa)
    if (id < 0 || id >= tok.vocab_size()) std::abort();
  (void)tok.decode(ofa);

  (void)tok.encode(mue::pre_caption(text, 30));
  (void)tok.encode(mue::pre_question(text, mue::kNoWordLimit));

  // Arbitrary ids: in range they decode, out of range they are refused with mue::Error.
  std::vector<int32_t> ids(size / 4);
  if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
  try {
    (void)tok.decode(ids);
  } catch (const mue::Error&) {
  }
  for (int32_t& id : ids) id = static_cast<int32_t>(static_cast<uint32_t>(id) % tok.vocab_size());
  (void)tok.decode(ids);
  return 0;
}
