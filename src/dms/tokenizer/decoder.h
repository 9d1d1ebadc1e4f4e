// Hugging Face decoders (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence),
// compiled into a form that decodes token by token. Tokenizer::decode and StreamDecoder both run
// through DecodeStream, so streamed text equals decoded text by construction.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace dms {

class Decoder {
 public:
  // `node` is tokenizer.json's "decoder" (null: tokens are joined with spaces, as tokenizers does).
  // Chains whose order cannot be decoded token by token are rejected as unsupported.
  static Decoder from_json(const nlohmann::json& node, const std::string& where);
  static Decoder byte_level();
  // Llama / Mistral: Replace("▁", " "), ByteFallback, Fuse, and Strip(" ", 1, 0) when the
  // encoder adds a leading space.
  static Decoder sentencepiece(bool strip_leading_space);

  // Raw bytes `token` contributes; `first` for the first token of a text.
  std::string piece(std::string_view token, bool first) const;

 private:
  friend class DecodeStream;
  struct TokenOp {
    enum Kind { Replace, Metaspace, Strip } kind;
    std::string from, to;     // Replace: from -> to; Metaspace: replacement; Strip: content
    size_t start = 0, stop = 0;
    bool drop_in_first = false;  // Metaspace: the first token loses its replacement characters
  };
  std::string apply_token_ops(std::string_view token, size_t index) const;

  std::vector<TokenOp> token_ops_;
  bool byte_fallback_ = false;
  bool byte_level_ = false;
  bool space_join_ = false;
  std::string strip_char_;  // Strip after the tokens are fused: leading characters of the text
  size_t strip_start_ = 0;
};

// Decodes one text token by token. push() returns the text that is final so far: complete UTF-8
// only, with byte-fallback runs held until they end (an invalid run becomes U+FFFD per byte, as
// tokenizers does). finish() returns the rest.
class DecodeStream {
 public:
  explicit DecodeStream(const Decoder& d) : d_(d), strip_left_(d.strip_start_) {}
  std::string push(std::string_view token);
  std::string finish();

 private:
  std::string emit(std::string text);
  std::string flush_run();
  const Decoder& d_;
  size_t index_ = 0;
  std::string bytes_;  // byte-level bytes waiting for the rest of a UTF-8 sequence
  std::string run_;    // byte-fallback bytes of the current run
  size_t strip_left_;
};

}  // namespace dms
