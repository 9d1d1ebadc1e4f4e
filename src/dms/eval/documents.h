// The token streams an evaluation runs on, read from a text file (cut into pieces of `context`
// tokens) or a JSONL file (one document per line, cut to `context` tokens: its text in `field`,
// or, when `field` holds a list, a conversation [{role, content}, ...] rendered with the chat
// template as dms retrofit renders its "messages", so held-out training data evaluates as is).
#pragma once
#include <cstdint>
#include <istream>
#include <string>
#include <vector>

#include "dms/tokenizer/chat_template.h"
#include "dms/tokenizer/tokenizer.h"

namespace dms::eval {

using Document = std::vector<int32_t>;

struct DocumentOptions {
  int64_t context = 4096;     // tokens per document at most
  int64_t max_documents = 4;
  std::string format = "auto";  // "text", "jsonl", or "auto": jsonl for a .jsonl name, else text
  std::string field = "text";   // JSONL: the member holding the text or the conversation
  bool add_bos = false;         // each document starts with BOS (when the tokenizer has one)
  const ChatTemplate* chat_template = nullptr;  // renders conversations; none: they are an error
};

// Text: the file's text, tokenized once, as consecutive documents of exactly `context` tokens
// (BOS included); a file shorter than that gives one shorter document. JSONL: every non-empty
// line an object whose `field` is a string or a conversation; documents shorter than 2 tokens
// are skipped.
// Throws Error naming the file (and line) for a missing or unreadable file, text that is not
// UTF-8, a malformed line, or no document of at least 2 tokens.
std::vector<Document> load_documents(const std::string& path, const Tokenizer& tokenizer, const DocumentOptions& options);
// The same from `in`; `path` names the source in errors and, for "auto", picks the format.
std::vector<Document> load_documents(std::istream& in, const std::string& path, const Tokenizer& tokenizer,
                                     const DocumentOptions& options);

}  // namespace dms::eval
