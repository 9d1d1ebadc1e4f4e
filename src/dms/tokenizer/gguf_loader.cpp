// Tokenizer::from_gguf: tokenizer.ggml.* metadata, mapped onto the pipeline of the Hugging Face
// tokenizer the GGUF was converted from.
#include <algorithm>
#include <map>

#include "dms/format/gguf.h"
#include "dms/tokenizer/tokenizer.h"
#include "dms/tokenizer/tokenizer_impl.h"
#include "dms/tokenizer/utf8.h"
#include "dms/util/error.h"

namespace dms {

namespace {

// llama.cpp's token types.
enum TokenType : int64_t { NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6 };

// The Split patterns of the Llama 3 and Qwen2 tokenizer.json files.
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct ByteLevelPreset {
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  bool ignore_merges = false;
  bool add_bos = false;
};

ByteLevelPreset byte_level_preset(const std::string& pre, const std::string& where) {
  if (pre == "default" || pre == "gpt2" || pre == "gpt-2") return {{}, PreTokenizer::byte_level_gpt2()};
  if (pre == "smollm") return {{}, PreTokenizer::digits_then_byte_level()};
  if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe") {
    return {{}, PreTokenizer::split_then_byte_level(kLlama3Pattern), true, true};
  }
  if (pre == "qwen2") return {Normalizer::nfc(), PreTokenizer::split_then_byte_level(kQwen2Pattern)};
  fail(where, "tokenizer.ggml.pre '" + pre +
                  "' is not supported (known: default, gpt2, gpt-2, smollm, llama3, llama-v3, llama-bpe, qwen2)");
}

std::optional<int32_t> special_id(const GgufFile& g, const std::string& key, size_t n_tokens) {
  auto v = g.opt_int(key);
  if (!v) return std::nullopt;
  // llama.cpp writes -1 (or UINT32_MAX) for "none".
  if (*v < 0 || *v == 0xFFFFFFFFLL) return std::nullopt;
  if (static_cast<uint64_t>(*v) >= n_tokens) {
    fail(g.path(), key + " is " + std::to_string(*v) + " but tokenizer.ggml.tokens has " +
                       std::to_string(n_tokens) + " entries");
  }
  return static_cast<int32_t>(*v);
}

// SentencePiece BPE merges from scores: a piece that splits into two pieces is a merge of them,
// ranked by the piece's score (higher first; equal scores share a rank and resolve leftmost first).
std::vector<BpeMerge> merges_from_scores(const std::vector<std::string>& tokens, const std::vector<double>& scores,
                                         const std::vector<int64_t>& types,
                                         const std::unordered_map<std::string, int32_t>& vocab) {
  std::vector<double> distinct(scores);
  std::sort(distinct.begin(), distinct.end(), std::greater<>());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  auto rank_of = [&](double s) {
    return static_cast<int32_t>(std::lower_bound(distinct.begin(), distinct.end(), s, std::greater<>()) - distinct.begin());
  };
  std::vector<BpeMerge> merges;
  for (size_t id = 0; id < tokens.size(); ++id) {
    if (!types.empty() && types[id] != NORMAL) continue;
    const std::string& t = tokens[id];
    if (vocab.at(t) != static_cast<int32_t>(id)) continue;  // a duplicate entry
    utf8::for_each_char(t, [&](char32_t, size_t pos, size_t) {
      if (pos == 0) return;
      auto l = vocab.find(t.substr(0, pos)), r = vocab.find(t.substr(pos));
      if (l != vocab.end() && r != vocab.end()) merges.push_back({l->second, r->second, rank_of(scores[id])});
    });
  }
  return merges;
}

}  // namespace

std::shared_ptr<Tokenizer> Tokenizer::from_gguf(const GgufFile& g) {
  const std::string& where = g.path();
  auto impl = std::make_unique<TokenizerImpl>();
  impl->source = where;
  const std::string kind = g.get_string("tokenizer.ggml.model");
  if (kind != "gpt2" && kind != "llama") {
    fail(where, "tokenizer.ggml.model '" + kind + "' is not supported (gpt2 and llama are)");
  }
  const auto tokens = g.get_string_array("tokenizer.ggml.tokens");
  if (tokens.empty()) fail(where, "tokenizer.ggml.tokens is empty");
  if (tokens.size() > static_cast<size_t>(INT32_MAX)) fail(where, "tokenizer.ggml.tokens has too many entries");
  std::vector<int64_t> types;
  if (g.has("tokenizer.ggml.token_type")) {
    types = g.get_int_array("tokenizer.ggml.token_type");
    if (types.size() != tokens.size()) {
      fail(where, "tokenizer.ggml.token_type has " + std::to_string(types.size()) +
                      " entries but tokenizer.ggml.tokens has " + std::to_string(tokens.size()));
    }
  }
  std::unordered_map<std::string, int32_t> vocab;
  vocab.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (utf8::first_invalid(tokens[i]) != std::string::npos) {
      fail(where, "tokenizer.ggml.tokens[" + std::to_string(i) + "] is not valid UTF-8");
    }
    vocab.emplace(tokens[i], static_cast<int32_t>(i));  // the first of duplicate entries wins
  }
  for (size_t i = 0; i < types.size(); ++i) {
    int64_t t = types[i];
    if (t == UNKNOWN || t == CONTROL || t == USER_DEFINED) {
      AddedToken a;
      a.id = static_cast<int32_t>(i);
      a.content = tokens[i];
      a.special = t != USER_DEFINED;
      impl->added.push_back(std::move(a));
    }
  }

  auto unk = special_id(g, "tokenizer.ggml.unknown_token_id", tokens.size());
  impl->bos = special_id(g, "tokenizer.ggml.bos_token_id", tokens.size());
  impl->eos = special_id(g, "tokenizer.ggml.eos_token_id", tokens.size());
  BpeModel::Options opts;
  if (kind == "gpt2") {
    auto merge_strings = g.get_string_array("tokenizer.ggml.merges");
    std::vector<BpeMerge> merges;
    merges.reserve(merge_strings.size());
    for (size_t i = 0; i < merge_strings.size(); ++i) {
      const std::string& m = merge_strings[i];
      std::string field = "tokenizer.ggml.merges[" + std::to_string(i) + "]";
      size_t sp = m.find(' ', 1);
      if (sp == std::string::npos) fail(where, field + " must be two tokens separated by a space, got '" + m + "'");
      std::string left = m.substr(0, sp), right = m.substr(sp + 1);
      for (const auto* part : {&left, &right}) {
        if (!vocab.count(*part)) fail(where, field + " names '" + *part + "', which is not in tokenizer.ggml.tokens");
      }
      if (!vocab.count(left + right)) {
        fail(where, field + " merges into '" + left + right + "', which is not in tokenizer.ggml.tokens");
      }
      merges.push_back({vocab.at(left), vocab.at(right), static_cast<int32_t>(i)});
    }
    auto preset = byte_level_preset(g.opt_string("tokenizer.ggml.pre").value_or("default"), where);
    opts.ignore_merges = preset.ignore_merges;
    impl->model = std::make_unique<BpeModel>(std::move(vocab), merges, opts);
    impl->normalizer = std::move(preset.normalizer);
    impl->pre_tokenizer = std::move(preset.pre_tokenizer);
    impl->decoder = Decoder::byte_level();
    impl->add_bos = g.opt_bool("tokenizer.ggml.add_bos_token").value_or(preset.add_bos);
  } else {
    auto scores = g.get_float_array("tokenizer.ggml.scores");
    if (scores.size() != tokens.size()) {
      fail(where, "tokenizer.ggml.scores has " + std::to_string(scores.size()) +
                      " entries but tokenizer.ggml.tokens has " + std::to_string(tokens.size()));
    }
    auto merges = merges_from_scores(tokens, scores, types, vocab);
    opts.byte_fallback = true;
    opts.fuse_unk = true;
    opts.unk_id = unk;
    impl->model = std::make_unique<BpeModel>(std::move(vocab), merges, opts);
    bool prefix = g.opt_bool("tokenizer.ggml.add_space_prefix").value_or(true);
    impl->normalizer = Normalizer::sentencepiece(prefix);
    impl->decoder = Decoder::sentencepiece(prefix);
    impl->add_bos = g.opt_bool("tokenizer.ggml.add_bos_token").value_or(true);
  }
  impl->chat_template = g.opt_string("tokenizer.chat_template").value_or("");
  impl->finalize();
  return std::make_shared<Tokenizer>(std::move(impl));
}

}  // namespace dms
