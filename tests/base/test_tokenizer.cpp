// Tokenizers against the Hugging Face tokenizers library: the ids, decodes and streamed decodes
// of tests/reference/make_tokenizer_fixtures.py's reference tokenizers must match exactly.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dms/format/gguf.h"
#include "dms/tokenizer/tokenizer.h"
#include "dms/util/error.h"

namespace dms {
namespace {

using nlohmann::json;

std::string tokenizer_fixtures() {
  const char* root = std::getenv("DMS_FIXTURES");
  if (root == nullptr) {
    ADD_FAILURE() << "DMS_FIXTURES is not set; run tests/reference/make_tokenizer_fixtures.py <dir> and "
                     "export DMS_FIXTURES=<dir> (scripts/test does both)";
    return {};
  }
  std::string dir = std::string(root) + "/tokenizers";
  if (!std::ifstream(dir + "/expected/smollm2.json")) {
    ADD_FAILURE() << dir << " has no tokenizer fixtures; run tests/reference/make_tokenizer_fixtures.py";
    return {};
  }
  return dir;
}

json load_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open fixture " + path);
  return json::parse(in);
}

std::vector<int32_t> ids_of(const json& j) { return j.get<std::vector<int32_t>>(); }

// Independent of the code under test: is `s` well-formed UTF-8 (RFC 3629)?
bool well_formed_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : c & (0x7F >> n);
    for (size_t k = 1; k < n; ++k) {
      auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3F);
    }
    static const uint32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

// Streams `ids` one at a time; every chunk must be complete UTF-8.
std::string stream_decode(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  StreamDecoder stream(tok, skip_special);
  std::string out;
  for (int32_t id : ids) {
    std::string chunk = stream.push(id);
    EXPECT_TRUE(well_formed_utf8(chunk)) << "partial UTF-8 emitted after id " << id;
    out += chunk;
  }
  std::string rest = stream.finish();
  EXPECT_TRUE(well_formed_utf8(rest));
  return out + rest;
}

// Every text and random id sequence of expected/<name>.json against `tok`.
void check_against_reference(const Tokenizer& tok, const json& expected, bool check_special_ids) {
  for (const auto& t : expected["texts"]) {
    const std::string text = t["text"];
    SCOPED_TRACE("text: " + text.substr(0, 80));
    auto ids = ids_of(t["ids"]);
    EXPECT_EQ(tok.encode(text, false), ids);
    if (check_special_ids) {
      EXPECT_EQ(tok.encode(text, tok.add_bos_default()), ids_of(t["ids_special"]));
    }
    EXPECT_EQ(tok.decode(ids, false), t["decoded"].get<std::string>());
    EXPECT_EQ(tok.decode(ids, true), t["decoded_skip"].get<std::string>());
    EXPECT_EQ(stream_decode(tok, ids, false), t["decoded"].get<std::string>());
    EXPECT_EQ(stream_decode(tok, ids, true), t["decoded_skip"].get<std::string>());
  }
  for (const auto& r : expected["random_decode"]) {
    auto ids = ids_of(r["ids"]);
    SCOPED_TRACE("random ids: " + r["ids"].dump());
    EXPECT_EQ(tok.decode(ids, false), r["decoded"].get<std::string>());
    EXPECT_EQ(tok.decode(ids, true), r["decoded_skip"].get<std::string>());
    EXPECT_EQ(stream_decode(tok, ids, false), r["decoded"].get<std::string>());
    EXPECT_EQ(stream_decode(tok, ids, true), r["decoded_skip"].get<std::string>());
  }
}

class HfTokenizer : public ::testing::TestWithParam<const char*> {};

TEST_P(HfTokenizer, MatchesHuggingFace) {
  std::string dir = tokenizer_fixtures();
  ASSERT_FALSE(dir.empty());
  std::string name = GetParam();
  auto tok = Tokenizer::from_hf_dir(dir + "/" + name);
  json expected = load_json(dir + "/expected/" + name + ".json");
  EXPECT_EQ(tok->vocab_size(), expected["vocab_size"].get<int32_t>());
  // add_bos_default() is what encoding with special tokens does in tokenizers.
  EXPECT_EQ(tok->add_bos_default(), !expected["template_bos_id"].is_null());
  if (!expected["template_bos_id"].is_null()) {
    EXPECT_EQ(tok->bos_id(), expected["template_bos_id"].get<int32_t>());
  }
  check_against_reference(*tok, expected, true);
}

INSTANTIATE_TEST_SUITE_P(Families, HfTokenizer,
                         ::testing::Values("smollm2", "qwen2", "llama3", "spm", "spm_legacy",
                                           "spm_metaspace"),
                         [](const auto& info) { return std::string(info.param); });

TEST(Tokenizer, ByteLevelRoundTripsEveryText) {
  std::string dir = tokenizer_fixtures();
  ASSERT_FALSE(dir.empty());
  json expected = load_json(dir + "/expected/smollm2.json");
  for (const char* name : {"smollm2", "llama3"}) {
    auto tok = Tokenizer::from_hf_dir(dir + "/" + name);
    for (const auto& t : expected["texts"]) {
      const std::string text = t["text"];
      // llama3's <|mask|> strips the whitespace around it by design (lstrip/rstrip).
      if (text.find("<|mask|>") != std::string::npos) continue;
      EXPECT_EQ(tok->decode(tok->encode(text, false)), text) << name;
    }
  }
}

TEST(Tokenizer, PieceBytesConcatenateToTheDecodedText) {
  std::string dir = tokenizer_fixtures();
  ASSERT_FALSE(dir.empty());
  for (const char* name : {"smollm2", "spm_legacy", "spm"}) {
    auto tok = Tokenizer::from_hf_dir(dir + "/" + name);
    json expected = load_json(dir + "/expected/" + std::string(name) + ".json");
    for (const auto& t : expected["texts"]) {
      auto ids = ids_of(t["ids"]);
      std::string joined;
      for (size_t i = 0; i < ids.size(); ++i) joined += tok->piece_bytes(ids[i], i == 0);
      EXPECT_EQ(joined, t["decoded"].get<std::string>()) << name << ": " << t["text"];
    }
  }
}

TEST(Tokenizer, StreamHoldsBackSplitCharacters) {
  std::string dir = tokenizer_fixtures();
  ASSERT_FALSE(dir.empty());
  auto tok = Tokenizer::from_hf_dir(dir + "/smollm2");
  const std::string text = "👩‍👩‍👧‍👦";
  auto ids = tok->encode(text, false);
  ASSERT_GT(ids.size(), 1u);
  StreamDecoder stream(*tok);
  std::string out;
  for (int32_t id : ids) {
    std::string chunk = stream.push(id);
    // Each piece carries part of a 4-byte character, so nothing may come out mid-character.
    EXPECT_TRUE(well_formed_utf8(chunk));
    out += chunk;
  }
  out += stream.finish();
  EXPECT_EQ(out, text);
  // After finish() the decoder starts a new text.
  EXPECT_EQ(stream_decode(*tok, ids, true), text);
}

TEST(Tokenizer, SpecialTokensAndConfig) {
  std::string dir = tokenizer_fixtures();
  ASSERT_FALSE(dir.empty());
  auto tok = Tokenizer::from_hf_dir(dir + "/smollm2");
  json config = load_json(dir + "/smollm2/tokenizer_config.json");
  auto bos = tok->token_id(config["bos_token"].get<std::string>());
  auto eos = tok->token_id(config["eos_token"].get<std::string>());
  ASSERT_TRUE(bos && eos);
  EXPECT_EQ(tok->bos_id(), bos);
  EXPECT_EQ(tok->eos_id(), eos);
  EXPECT_TRUE(tok->is_special(*eos));
  EXPECT_EQ(tok->token_text(*eos), config["eos_token"].get<std::string>());
  EXPECT_EQ(tok->chat_template_source(), config["chat_template"].get<std::string>());
  auto word = tok->token_id("Ġthe");
  ASSERT_TRUE(word);
  EXPECT_FALSE(tok->is_special(*word));
  // add_bos prepends the configured BOS even where the checkpoint does not ask for it.
  EXPECT_FALSE(tok->add_bos_default());
  auto with_bos = tok->encode("hi", true);
  ASSERT_FALSE(with_bos.empty());
  EXPECT_EQ(with_bos[0], *bos);
}

TEST(Tokenizer, LongTextIsFastAndExact) {
  std::string dir = tokenizer_fixtures();
  ASSERT_FALSE(dir.empty());
  auto tok = Tokenizer::from_hf_dir(dir + "/smollm2");
  json long_text = load_json(dir + "/long_text.json");
  const std::string text = long_text["text"];
  auto start = std::chrono::steady_clock::now();
  auto ids = tok->encode(text, false);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(ids, ids_of(long_text["smollm2_ids"]));
  std::printf("encoded %zu bytes into %zu tokens in %.3f s\n", text.size(), ids.size(), seconds);
  // Generous enough for a sanitizer build on a slow core; a quadratic merge loop blows far past it.
  EXPECT_LT(seconds, 60.0);
  EXPECT_EQ(tok->decode(ids), text);
}

struct GgufCase {
  const char* file;
  const char* expected;  // expected/<name>.json of the pipeline the GGUF stands for
  bool add_bos;
};

class GgufTokenizer : public ::testing::TestWithParam<GgufCase> {};

TEST_P(GgufTokenizer, MatchesReference) {
  std::string dir = tokenizer_fixtures();
  ASSERT_FALSE(dir.empty());
  const GgufCase c = GetParam();
  auto tok = Tokenizer::from_gguf(*GgufFile::open(dir + "/" + c.file));
  json expected = load_json(dir + "/expected/" + c.expected + ".json");
  EXPECT_EQ(tok->vocab_size(), expected["vocab_size"].get<int32_t>());
  EXPECT_EQ(tok->add_bos_default(), c.add_bos);
  check_against_reference(*tok, expected, true);
}

// smollm2: pre "smollm"; qwen2: pre "qwen2" (NFC + Qwen2 split); llama3: pre "llama-bpe" (Llama 3
// split, ignore_merges, BOS by default); spm: tokenizer model llama with scores, which is the
// legacy Llama 2 pipeline.
INSTANTIATE_TEST_SUITE_P(Files, GgufTokenizer,
                         ::testing::Values(GgufCase{"smollm2.gguf", "smollm2", false},
                                           GgufCase{"qwen2.gguf", "gguf_qwen2", false},
                                           GgufCase{"llama3.gguf", "gguf_llama3", true},
                                           GgufCase{"spm.gguf", "spm_legacy", true}),
                         [](const auto& info) { return std::string(info.param.expected); });

TEST(Tokenizer, HugeRunsOfOneCharacterClass) {
  std::string dir = tokenizer_fixtures();
  ASSERT_FALSE(dir.empty());
  // Single regex matches of tens to hundreds of kilobytes must neither overflow the matcher's stack nor
  // go quadratic.
  std::string letters, digits, emoji;
  for (int i = 0; i < 60000; ++i) letters += static_cast<char>('a' + i % 26);
  for (int i = 0; i < 30000; ++i) digits += static_cast<char>('0' + i % 10);
  for (int i = 0; i < 10000; ++i) emoji += "\xF0\x9F\x98\x80";
  const std::vector<std::string> texts = {std::string(200000, ' '), std::string(100000, '\n'), letters, digits,
                                          emoji, std::string(50000, '!')};
  for (const char* name : {"smollm2", "qwen2", "llama3", "spm"}) {
    auto tok = Tokenizer::from_hf_dir(dir + "/" + name);
    for (const auto& text : texts) {
      auto ids = tok->encode(text, false);
      EXPECT_FALSE(ids.empty());
      std::string back = tok->decode(ids);
      // SentencePiece decoding drops the text's first space, which here came from the input.
      std::string want = std::string(name) == "spm" && text[0] == ' ' ? text.substr(1) : text;
      EXPECT_TRUE(back == want) << name << ": a text of " << text.size() << " bytes starting '"
                                << text.substr(0, 4) << "' decodes to " << back.size() << " bytes";
    }
  }
}

TEST(TokenizerGguf, DefaultModelMatchesReference) {
  std::string dir = tokenizer_fixtures();
  ASSERT_FALSE(dir.empty());
  const char* model = std::getenv("DMS_DEFAULT_MODEL");
  ASSERT_NE(model, nullptr) << "DMS_DEFAULT_MODEL is not set (source scripts/env.sh)";
  auto gguf = GgufFile::open(model);
  auto tok = Tokenizer::from_gguf(*gguf);
  json expected = load_json(dir + "/expected/smollm2.json");
  check_against_reference(*tok, expected, false);
  json config = load_json(dir + "/smollm2/tokenizer_config.json");
  EXPECT_EQ(tok->chat_template_source(), config["chat_template"].get<std::string>());
  EXPECT_EQ(tok->eos_id(), tok->token_id("<|im_end|>"));
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

TEST(TokenizerErrors, BadTokenizerJson) {
  std::string dir = tokenizer_fixtures();
  ASSERT_FALSE(dir.empty());
  const std::string bad = dir + "/bad/";
  auto load = [&](const std::string& c) { return [=] { Tokenizer::from_hf_dir(bad + c); }; };
  expect_error(load("missing"), {"missing/tokenizer.json", "cannot be opened"});
  expect_error(load("invalid_json"), {"invalid_json/tokenizer.json", "invalid JSON"});
  expect_error(load("no_model"), {"no_model/tokenizer.json", "field 'model' is missing"});
  expect_error(load("unknown_merge"), {"unknown_merge/tokenizer.json", "model.merges[1]", "'zz'"});
  expect_error(load("huge_id"), {"huge_id/tokenizer.json", "token id 2000000000 is out of range"});
  expect_error(load("wordpiece"), {"wordpiece/tokenizer.json", "model type 'WordPiece' is not supported"});
  expect_error(load("unigram"), {"unigram/tokenizer.json", "model type 'Unigram' is not supported"});
  expect_error(load("unsupported_pre"),
               {"unsupported_pre/tokenizer.json", "pre_tokenizer type 'BertPreTokenizer' is not supported"});
}

TEST(TokenizerErrors, BadGguf) {
  std::string dir = tokenizer_fixtures();
  ASSERT_FALSE(dir.empty());
  auto load = [&](const std::string& f) {
    return [=] { Tokenizer::from_gguf(*GgufFile::open(dir + "/bad/" + f)); };
  };
  expect_error(load("type_count.gguf"),
               {"type_count.gguf", "tokenizer.ggml.token_type has 299 entries", "tokenizer.ggml.tokens has 300"});
  expect_error(load("unknown_pre.gguf"), {"unknown_pre.gguf", "tokenizer.ggml.pre 'mystery-pre' is not supported"});
  expect_error(load("bert_model.gguf"), {"bert_model.gguf", "tokenizer.ggml.model 'bert' is not supported"});
}

TEST(TokenizerErrors, BadTextAndIds) {
  std::string dir = tokenizer_fixtures();
  ASSERT_FALSE(dir.empty());
  auto tok = Tokenizer::from_hf_dir(dir + "/smollm2");
  expect_error([&] { tok->encode(std::string("ok \xC3\x28 bad"), false); }, {"not valid UTF-8", "byte 3"});
  std::vector<int32_t> ids = {5, tok->vocab_size()};
  expect_error([&] { tok->decode(ids); }, {"token id " + std::to_string(tok->vocab_size()), "tokenizer.json"});
  std::vector<int32_t> negative = {-1};
  expect_error([&] { tok->decode(negative); }, {"token id -1"});
  StreamDecoder stream(*tok);
  expect_error([&] { stream.push(-7); }, {"token id -7"});
}

}  // namespace
}  // namespace dms
