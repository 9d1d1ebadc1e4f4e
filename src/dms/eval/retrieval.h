// Passkey retrieval: a five-digit key stated once at a chosen depth of long filler text, asked
// for after the filler. An item is correct only when the key appears in the model's answer as
// a number of its own (not inside a longer run of digits).
//
// Layout of an item (token counts are exact; the filler is whole sentences):
//   intro | filler before | needle | filler after | question
// depth = share of the filler's tokens that come before the needle (0: right after the intro,
// 1: right before the question). Pieces are tokenized separately and joined, so the needle
// and the question keep the same tokens wherever they are placed.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dms/tokenizer/tokenizer.h"

namespace dms::eval {

struct RetrievalItem {
  int64_t length = 0;  // the length asked for; prompt.size() is at most this
  double depth = 0;
  std::string answer;  // the key, five digits
  std::vector<int32_t> prompt;
  int64_t needle_pos = 0;  // position of the needle's first token in the prompt
  int64_t needle_tokens = 0;
};

struct RetrievalOptions {
  std::vector<int64_t> lengths = {1024, 2048, 4096};
  std::vector<double> depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  int64_t trials = 2;     // items (different keys) per length and depth
  uint64_t seed = 1;
  int64_t answer_tokens = 8;  // tokens generated for the answer
  bool add_bos = false;
};

// Every (length, depth, trial) item, lengths outermost. Throws Error naming the length when it
// cannot hold the intro, needle, question and one filler sentence, or a depth outside [0, 1].
std::vector<RetrievalItem> make_retrieval_items(const Tokenizer& tokenizer, const RetrievalOptions& options);

// Whether `answer` occurs in `output` with no digit right before or after it.
bool answer_found(const std::string& output, const std::string& answer);

}  // namespace dms::eval
