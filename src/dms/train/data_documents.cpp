#include "dms/train/data_documents.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include <nlohmann/json.hpp>

#include "dms/tokenizer/chat_messages.h"
#include "dms/tokenizer/chat_template.h"
#include "dms/tokenizer/tokenizer.h"
#include "dms/train/data_jsonl.h"
#include "dms/util/error.h"
#include "dms/util/text_file.h"

namespace dms {
namespace {

namespace fs = std::filesystem;

bool is_blank(const std::string& s) { return s.find_first_not_of(" \t\r\n\f\v") == std::string::npos; }

std::vector<int32_t> encode(const Tokenizer& tokenizer, const std::string& text, bool add_bos, const std::string& where) {
  try {
    return tokenizer.encode(text, add_bos);
  } catch (const Error& e) {
    fail(where, e.what());
  }
}

std::string split_key_of(const nlohmann::json& record, const std::string& content, const std::string& where) {
  auto id = record.find("id");
  if (id == record.end()) return content;
  if (id->is_string()) return id->get<std::string>();
  if (id->is_number_integer()) return id->dump();
  fail(where, "'id' must be a string or an integer");
}

Document document_from_record(const nlohmann::json& record, const std::string& where, const Tokenizer& tokenizer,
                              const ChatTemplate& chat_template) {
  if (!record.is_object()) fail(where, "expected a JSON object with 'text' or 'messages', got " + std::string(record.type_name()));
  auto text = record.find("text");
  auto messages = record.find("messages");
  const bool has_text = text != record.end(), has_messages = messages != record.end();
  if (has_text && has_messages) fail(where, "has both 'text' and 'messages'; a record is one or the other");
  if (!has_text && !has_messages) fail(where, "has neither 'text' nor 'messages'");
  Document doc;
  doc.origin = where;
  if (has_text) {
    if (!text->is_string()) fail(where, "'text' must be a string");
    const std::string t = text->get<std::string>();
    if (t.empty()) fail(where, "'text' is empty");
    doc.split_key = split_key_of(record, t, where);
    doc.tokens = encode(tokenizer, t, tokenizer.add_bos_default(), where);
  } else {
    const std::vector<ChatMessage> chat = parse_chat_messages(*messages, where);
    // The canonical form of the conversation, so that key order or extra fields do not move it.
    nlohmann::json canonical = nlohmann::json::array();
    for (const auto& m : chat) canonical.push_back({{"role", m.role}, {"content", m.content}});
    doc.split_key = split_key_of(record, canonical.dump(), where);
    doc.tokens = encode(tokenizer, chat_template.render(chat, false), false, where);
  }
  if (doc.tokens.empty()) fail(where, "the document encodes to no tokens");
  return doc;
}

void jsonl_documents(std::istream& in, bool empty, const std::string& path, const Tokenizer& tokenizer,
                     const ChatTemplate& chat_template, std::vector<Document>& out) {
  if (empty) fail(path, "empty file");
  const int64_t records = read_jsonl(in, path, [&](int64_t line, const nlohmann::json& record) {
    out.push_back(document_from_record(record, jsonl_where(path, line), tokenizer, chat_template));
  });
  if (records == 0) fail(path, "empty file: no JSON records");
}

void read_jsonl_documents(const std::string& path, const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                          std::vector<Document>& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot read");
  jsonl_documents(in, in.peek() == std::char_traits<char>::eof(), path, tokenizer, chat_template, out);
}

void text_document(const std::string& text, const std::string& path, const Tokenizer& tokenizer,
                   std::vector<Document>& out) {
  Document doc;
  doc.origin = path;
  if (is_blank(text)) fail(path, "empty file");
  doc.split_key = text;
  doc.tokens = encode(tokenizer, text, tokenizer.add_bos_default(), path);
  out.push_back(std::move(doc));
}

void read_path(const std::string& path, const Tokenizer& tokenizer, const ChatTemplate& chat_template,
               std::vector<Document>& out) {
  if (path.ends_with(".jsonl")) read_jsonl_documents(path, tokenizer, chat_template, out);
  else text_document(read_text_file(path), path, tokenizer, out);
}

}  // namespace

std::vector<Document> read_documents(const std::vector<std::string>& paths, const Tokenizer& tokenizer,
                                     const ChatTemplate& chat_template) {
  std::vector<Document> docs;
  for (const std::string& path : paths) {
    std::error_code ec;
    if (!fs::exists(path, ec)) fail(path, "no such file or directory");
    if (!fs::is_directory(path, ec)) {
      read_path(path, tokenizer, chat_template, docs);
      continue;
    }
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(path))
      if (entry.is_regular_file() && !entry.path().filename().string().starts_with("."))
        files.push_back(entry.path().string());
    if (files.empty()) fail(path, "directory holds no data files");
    std::sort(files.begin(), files.end());
    for (const auto& f : files) read_path(f, tokenizer, chat_template, docs);
  }
  return docs;
}

std::vector<Document> documents_from_text(const std::string& text, const std::string& name, const Tokenizer& tokenizer,
                                          const ChatTemplate& chat_template) {
  std::vector<Document> docs;
  if (name.ends_with(".jsonl")) {
    std::istringstream in(text);
    jsonl_documents(in, text.empty(), name, tokenizer, chat_template, docs);
  } else {
    text_document(text, name, tokenizer, docs);
  }
  return docs;
}

uint64_t split_hash(std::string_view split_key) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : split_key) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

bool in_heldout_split(std::string_view split_key, double fraction) {
  return static_cast<double>(split_hash(split_key) >> 11) * 0x1.0p-53 < fraction;
}

}  // namespace dms
