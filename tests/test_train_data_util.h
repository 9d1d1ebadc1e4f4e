// Shared pieces of the training data tests: the default model's tokenizer and chat template
// (read from its GGUF metadata, no weights), a scratch directory, and random text.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>

#include "dms/format/gguf.h"
#include "dms/tokenizer/chat_template.h"
#include "dms/tokenizer/tokenizer.h"
#include "dms/util/error.h"

namespace dms::test {

struct TokenizerFixture {
  std::shared_ptr<Tokenizer> tokenizer;
  ChatTemplate chat_template;

  static const TokenizerFixture& get() {
    static const TokenizerFixture fixture = [] {
      const char* path = std::getenv("DMS_DEFAULT_MODEL");
      if (!path || !*path) fail("DMS_DEFAULT_MODEL", "not set; source scripts/env.sh and run scripts/fetch-default-model");
      auto gguf = GgufFile::open(path);
      TokenizerFixture f;
      f.tokenizer = Tokenizer::from_gguf(*gguf);
      f.chat_template = ChatTemplate::from_source(f.tokenizer->chat_template_source(), *f.tokenizer);
      return f;
    }();
    return fixture;
  }
};

// A fresh directory under the system's temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    root_ = std::filesystem::temp_directory_path() / ("dms-train-data-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(root_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string path(const std::string& rel) const { return (root_ / rel).string(); }
  // Writes `content` to `rel` (creating its folders) and returns the full path.
  std::string write(const std::string& rel, const std::string& content) const {
    const auto p = root_ / rel;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }

 private:
  std::filesystem::path root_;
};

// `words` random words: ASCII, accented, CJK, emoji, digits and punctuation, with occasional line breaks.
inline std::string random_text(std::mt19937_64& rng, int words) {
  static const char* kWords[] = {"the", "river", "Über", "café", "naïve", "東京", "数据", "🙂", "42", "3.14", "x=y+1;",
                                 "(note)", "don't", "—", "Hello", "WORLD", "  spaced", "tab\there", "end.", "?!"};
  std::uniform_int_distribution<size_t> pick(0, std::size(kWords) - 1);
  std::uniform_int_distribution<int> newline(0, 9);
  std::string out;
  for (int i = 0; i < words; ++i) {
    if (i) out += newline(rng) == 0 ? "\n" : " ";
    out += kWords[pick(rng)];
  }
  return out;
}

}  // namespace dms::test
