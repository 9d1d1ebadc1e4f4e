// What a loaded tokenizer is made of; filled by the tokenizer.json and GGUF loaders.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dms/tokenizer/added_tokens.h"
#include "dms/tokenizer/bpe.h"
#include "dms/tokenizer/decoder.h"
#include "dms/tokenizer/normalizer.h"
#include "dms/tokenizer/pretokenizer.h"

namespace dms {

struct TokenizerImpl {
  std::string source;                    // the file errors name
  std::unique_ptr<BpeModel> model;
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  Decoder decoder;
  std::vector<AddedToken> added;
  AddedTokenMatcher raw_added;           // matched on the input text
  AddedTokenMatcher normalized_added;    // matched on normalized text
  std::vector<std::string> tokens;       // text per id; ids without an entry are empty
  std::vector<uint8_t> present;          // 1 where `tokens` has an entry
  std::vector<uint8_t> special;
  std::optional<int32_t> bos, eos;
  bool add_bos = false;
  std::string chat_template;

  // Builds the id tables and the added-token matchers from `model` and `added`.
  void finalize();
};

}  // namespace dms
