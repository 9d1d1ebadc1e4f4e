// Tokenizers: byte-level BPE (GPT-2 family: SmolLM2, Qwen2/2.5/3, Llama 3) and
// SentencePiece-style BPE (Llama 2 / Mistral family), loaded from a Hugging Face
// tokenizer.json (+ tokenizer_config.json) or from GGUF metadata.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dms {

class GgufFile;
class DecodeStream;
struct TokenizerImpl;

// The texts of a Hugging Face tokenizer's files (nullopt: the file does not exist); the paths
// name them in errors.
struct HfTokenizerFiles {
  std::string tokenizer_json, tokenizer_path;
  std::optional<std::string> config_json;  // tokenizer_config.json
  std::string config_path;
  std::optional<std::string> chat_template_jinja;
};

class Tokenizer {
 public:
  // Reads <dir>/tokenizer.json and, if present, <dir>/tokenizer_config.json (add_bos_token,
  // bos/eos tokens, chat_template) and <dir>/chat_template.jinja (which takes precedence, as in
  // transformers). Throws Error naming the file and field at fault, including for pipeline
  // components this project does not implement.
  static std::shared_ptr<Tokenizer> from_hf_dir(const std::string& dir);
  static std::shared_ptr<Tokenizer> from_hf_files(const HfTokenizerFiles& files);
  // Reads tokenizer.ggml.* and tokenizer.chat_template. tokenizer.ggml.pre picks the
  // pre-tokenization of the Hugging Face tokenizer the file was converted from (default, gpt2,
  // smollm, llama3/llama-bpe, qwen2); a llama-model file is the legacy Llama 2 pipeline.
  static std::shared_ptr<Tokenizer> from_gguf(const GgufFile& gguf);
  ~Tokenizer();

  // Special / added tokens written in `text` are recognised as such (as Hugging Face does).
  // add_bos prepends BOS when the tokenizer has one. Throws Error for text that is not UTF-8.
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const;
  // Throws Error for an id outside the vocabulary.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  int32_t vocab_size() const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  bool add_bos_default() const;          // what the checkpoint asks for
  bool is_special(int32_t id) const;     // control / special added tokens
  std::optional<int32_t> token_id(std::string_view token) const;  // exact vocab/added-token lookup
  std::string token_text(int32_t id) const;                       // the vocab entry as stored
  const std::string& chat_template_source() const;                // "" when none

  // Bytes that token `id` contributes to decoded text on its own; `first` is true for the first
  // token of the text (SentencePiece drops its leading space there). A byte-fallback token gives
  // its one raw byte; StreamDecoder is the way to turn ids into text.
  std::string piece_bytes(int32_t id, bool first) const;

  explicit Tokenizer(std::unique_ptr<TokenizerImpl> impl);

 private:
  friend class StreamDecoder;
  std::unique_ptr<TokenizerImpl> impl_;
};

// Turns a stream of token ids into text as they come: never emits a partial UTF-8 sequence;
// the concatenation of all push() results plus finish() equals Tokenizer::decode(all ids).
// The tokenizer must outlive the decoder.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = true);
  ~StreamDecoder();
  StreamDecoder(StreamDecoder&&) noexcept;
  std::string push(int32_t id);
  // Flushes what is left (invalid bytes become U+FFFD, as decode does); the decoder then starts
  // a new text.
  std::string finish();

 private:
  const Tokenizer* tok_;
  bool skip_special_;
  std::unique_ptr<DecodeStream> stream_;
};

}  // namespace dms
