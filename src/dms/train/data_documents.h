// Training documents: files read and tokenized, one token sequence per document.
//
// Formats, chosen by the file name:
//   *.jsonl  one JSON object per line (blank lines are skipped), each a document:
//              {"text": "..."}                                  plain text
//              {"messages": [{"role": "user", "content": "..."},
//                            {"role": "assistant", "content": "..."}]}   a conversation
//            with an optional "id" (string or integer) and any other fields, which are ignored.
//            A conversation is rendered with the model's chat template (no generation prompt)
//            and encoded without BOS, since the template writes its own; roles are system,
//            user and assistant. Text is encoded as `dms generate` encodes a prompt: with BOS
//            when the tokenizer asks for it. No EOS is appended: rows keep documents apart.
//   other    plain text, the whole file one document. Blank lines are not document breaks,
//            because they are paragraph breaks inside most documents and cutting there would
//            cut the long context that eviction is learnt on; many small documents go in JSONL.
// A directory stands for the files directly inside it (sorted by name, hidden ones skipped).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dms {

class Tokenizer;
class ChatTemplate;

struct Document {
  std::string origin;     // "corpus.jsonl:12" or "story.txt", for messages
  std::string split_key;  // what decides its split: the record's "id" when it has one, else its content
  std::vector<int32_t> tokens;
};

// Reads every document of `paths` in order. Throws Error naming the file (and line) for an
// empty file, a JSONL file without records, malformed JSON, a record that is not an object,
// that has neither or both of "text" and "messages", a non-string text, an empty document,
// messages that are not a non-empty list of {role, content} objects with a known role, and
// text that is not UTF-8.
std::vector<Document> read_documents(const std::vector<std::string>& paths, const Tokenizer& tokenizer,
                                     const ChatTemplate& chat_template);

// The documents of one file whose content is `text` (the format chosen by `name` as above).
std::vector<Document> documents_from_text(const std::string& text, const std::string& name, const Tokenizer& tokenizer,
                                          const ChatTemplate& chat_template);

// The stable held-out split: true when `split_key` falls in the held-out share `fraction`
// (0 to 1). Decided by a 64-bit hash of the key alone (FNV-1a, then the splitmix64 finaliser;
// held out iff (hash >> 11) * 2^-53 < fraction), so a document's side never depends on the
// order, the other documents or the machine, and a larger fraction only adds documents.
bool in_heldout_split(std::string_view split_key, double fraction);
uint64_t split_hash(std::string_view split_key);

}  // namespace dms
