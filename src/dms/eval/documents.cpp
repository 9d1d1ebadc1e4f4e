#include "dms/eval/documents.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "dms/tokenizer/chat_messages.h"
#include "dms/util/error.h"

namespace dms::eval {
namespace {

std::vector<int32_t> encode(const Tokenizer& tok, const std::string& text, bool add_bos, const std::string& where) {
  try {
    return tok.encode(text, add_bos && tok.bos_id().has_value());
  } catch (const Error& e) {
    fail(where, e.what());
  }
}

// Enough bytes for `tokens` tokens of any ordinary text (BPE tokens average 3-5 bytes), cut
// after the last line break or space so that no word or UTF-8 sequence is split.
std::string read_prefix(std::istream& in, int64_t tokens) {
  const int64_t cap = tokens * 16;
  std::string text(static_cast<size_t>(cap), '\0');
  in.read(text.data(), cap);
  text.resize(static_cast<size_t>(in.gcount()));
  if (static_cast<int64_t>(text.size()) < cap) return text;
  size_t cut = text.rfind('\n');
  if (cut == std::string::npos) cut = text.rfind(' ');
  if (cut == std::string::npos) {
    cut = text.size() - 1;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;  // continuation bytes
    --cut;
  }
  text.resize(cut + 1);
  return text;
}

std::vector<Document> text_documents(std::istream& in, const std::string& path, const Tokenizer& tok,
                                     const DocumentOptions& o) {
  const std::vector<int32_t> ids = encode(tok, read_prefix(in, o.context * o.max_documents), false, path);
  const bool bos = o.add_bos && tok.bos_id().has_value();
  const int64_t body = o.context - (bos ? 1 : 0);
  std::vector<Document> docs;
  for (int64_t start = 0; static_cast<int64_t>(docs.size()) < o.max_documents; start += body) {
    const int64_t n = std::min<int64_t>(body, static_cast<int64_t>(ids.size()) - start);
    if (n < body && !(docs.empty() && n + (bos ? 1 : 0) >= 2)) break;
    Document d;
    if (bos) d.push_back(*tok.bos_id());
    d.insert(d.end(), ids.begin() + start, ids.begin() + start + n);
    docs.push_back(std::move(d));
  }
  return docs;
}

std::vector<Document> jsonl_documents(std::istream& in, const std::string& path, const Tokenizer& tok,
                                      const DocumentOptions& o) {
  std::vector<Document> docs;
  std::string line;
  for (int64_t number = 1; static_cast<int64_t>(docs.size()) < o.max_documents && std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(number);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(where, std::string("not valid JSON (") + e.what() + ")");
    }
    if (!j.is_object()) fail(where, "expected a JSON object per line");
    if (!j.contains(o.field)) fail(where, "no \"" + o.field + "\" member (--field names the one holding the text)");
    const nlohmann::json& value = j[o.field];
    Document d;
    if (value.is_string()) {
      d = encode(tok, value.get<std::string>(), o.add_bos, where);
    } else if (value.is_array()) {
      if (!o.chat_template) fail(where, "\"" + o.field + "\" is a conversation, and no chat template was given to render it");
      // The template writes its own BOS, as in training data.
      d = encode(tok, o.chat_template->render(parse_chat_messages(value, where), false), false, where);
    } else {
      fail(where, "\"" + o.field + "\" is neither a string nor a list of {role, content} messages");
    }
    if (static_cast<int64_t>(d.size()) > o.context) d.resize(static_cast<size_t>(o.context));
    if (d.size() >= 2) docs.push_back(std::move(d));
  }
  return docs;
}

}  // namespace

std::vector<Document> load_documents(const std::string& path, const Tokenizer& tokenizer, const DocumentOptions& o) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open");
  return load_documents(in, path, tokenizer, o);
}

std::vector<Document> load_documents(std::istream& in, const std::string& path, const Tokenizer& tokenizer,
                                     const DocumentOptions& o) {
  if (o.context < 2) fail("documents", "context must be at least 2 tokens, got " + std::to_string(o.context));
  if (o.max_documents < 1) fail("documents", "need at least 1 document, got " + std::to_string(o.max_documents));
  std::string format = o.format;
  if (format == "auto") format = path.ends_with(".jsonl") ? "jsonl" : "text";
  if (format != "text" && format != "jsonl") fail("documents", "format must be text, jsonl or auto, got '" + format + "'");
  std::vector<Document> docs = format == "jsonl" ? jsonl_documents(in, path, tokenizer, o) : text_documents(in, path, tokenizer, o);
  if (in.bad()) fail(path, "read error");
  if (docs.empty()) fail(path, "no document of at least 2 tokens");
  return docs;
}

}  // namespace dms::eval
