// Shared by the libFuzzer targets (one per parser, see fuzz/README.md).
//
// The contract every target checks: whatever the bytes, a parser either succeeds or throws
// dms::Error (serve::ApiError for requests) naming what is wrong. Any other exception, a crash, a
// sanitizer report, a leak or a hang is a finding: the target lets it escape to libFuzzer.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dms/format/gguf.h"
#include "dms/tokenizer/chat_template.h"
#include "dms/tokenizer/tokenizer.h"
#include "dms/util/error.h"

namespace dms::fuzz {

// Inputs that hold several files are cut at this line (the dictionaries list it).
inline constexpr std::string_view kSeparator = "\n--8<--\n";

inline std::vector<std::string> split_parts(const uint8_t* data, size_t size) {
  std::string_view all(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  for (size_t at; (at = all.find(kSeparator)) != std::string_view::npos; all.remove_prefix(at + kSeparator.size()))
    parts.emplace_back(all.substr(0, at));
  parts.emplace_back(all);
  return parts;
}

// With DMS_FUZZ_SHOW_ERRORS set (scripts/fuzz's replay of the regression inputs) an error is
// printed as "rejected: <message>", so the replay shows that each input gets a clear one.
inline void show_rejection(const char* message) {
  static const bool show = std::getenv("DMS_FUZZ_SHOW_ERRORS") != nullptr;
  if (show) std::fprintf(stderr, "rejected: %s\n", message);
}

// Runs `f`; dms::Error is the expected answer to bad input, anything else escapes.
template <class F>
void expect_ok_or_error(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    show_rejection(e.what());
  }
}

// The default model's tokenizer and chat template (GGUF at $DMS_DEFAULT_MODEL), loaded once: the
// real vocabulary the data, template and request parsers meet in use.
struct DefaultTokenizer {
  std::shared_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ChatTemplate> chat_template;
};

inline const DefaultTokenizer& default_tokenizer() {
  static const DefaultTokenizer loaded = [] {
    const char* path = std::getenv("DMS_DEFAULT_MODEL");
    if (!path || !*path) fail("DMS_DEFAULT_MODEL", "is not set: source scripts/env.sh (scripts/fuzz does)");
    auto gguf = GgufFile::open(path);
    DefaultTokenizer d;
    d.tokenizer = Tokenizer::from_gguf(*gguf);
    d.chat_template = std::make_unique<ChatTemplate>(ChatTemplate::from_source(d.tokenizer->chat_template_source(), *d.tokenizer));
    return d;
  }();
  return loaded;
}

// Reads every byte of a tensor's data, as the loaders do (the sum keeps the reads).
inline uint64_t touch_bytes(const uint8_t* data, size_t n) {
  uint64_t sum = 0;
  for (size_t i = 0; i < n; ++i) sum += data[i];
  return sum;
}
inline volatile uint64_t g_sink;

// Encodes and decodes `text`, checking StreamDecoder against Tokenizer::decode (tokenizer.h's
// promise); a broken promise aborts.
void encode_and_decode(const Tokenizer& tokenizer, std::string_view text);

}  // namespace dms::fuzz
