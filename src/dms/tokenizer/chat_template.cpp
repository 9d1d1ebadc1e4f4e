#include "dms/tokenizer/chat_template.h"

#include <ctime>
#include <iostream>
#include <optional>

#include "dms/tokenizer/tokenizer.h"
#include "dms/tokenizer/utf8.h"

namespace dms {

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Resolves the escapes a Jinja string literal may hold.
std::string unescape_jinja(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    char c = s[++i];
    switch (c) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      default: out += c; break;  // \\, \', \"
    }
  }
  return out;
}

// The literal text between `open` (followed by a newline, real or escaped) and `close`, provided
// it is plain text inside one string literal (no quotes: nothing is concatenated into it).
std::optional<std::string> literal_after(const std::string& src, const std::string& open, const std::string& close) {
  for (size_t pos = src.find(open); pos != std::string::npos; pos = src.find(open, pos + 1)) {
    size_t start = pos + open.size();
    if (src.compare(start, 1, "\n") == 0) start += 1;
    else if (src.compare(start, 2, "\\n") == 0) start += 2;
    else continue;
    size_t end = src.find(close, start);
    if (end == std::string::npos) continue;
    std::string body = src.substr(start, end - start);
    if (body.find_first_of("'\"{}") != std::string::npos) continue;
    return unescape_jinja(body);
  }
  return std::nullopt;
}

// The value of a quoted string that follows `marker` in the source.
std::optional<std::string> quoted_after(const std::string& src, const std::string& marker) {
  size_t pos = src.find(marker);
  if (pos == std::string::npos) return std::nullopt;
  pos += marker.size();
  if (pos >= src.size() || (src[pos] != '"' && src[pos] != '\'')) return std::nullopt;
  char quote = src[pos];
  size_t end = src.find(quote, pos + 1);
  if (end == std::string::npos) return std::nullopt;
  return unescape_jinja(src.substr(pos + 1, end - pos - 1));
}

// Python's str.isspace, which Jinja's trim filter (str.strip) uses.
bool py_space(char32_t c) { return utf8::is_whitespace(c) || (c >= 0x1C && c <= 0x1F); }

std::string py_trim(const std::string& s) {
  size_t begin = 0, end = 0;
  bool seen = false;
  utf8::for_each_char(s, [&](char32_t c, size_t pos, size_t len) {
    if (py_space(c)) return;
    if (!seen) begin = pos;
    seen = true;
    end = pos + len;
  });
  return seen ? s.substr(begin, end - begin) : std::string();
}

std::string strip_newlines(const std::string& s, bool left, bool right) {
  size_t b = 0, e = s.size();
  if (left) while (b < e && s[b] == '\n') ++b;
  if (right) while (e > b && s[e - 1] == '\n') --e;
  return s.substr(b, e - b);
}

// What Python's str.split(sep) gives first and last.
std::string before_first(const std::string& s, const std::string& sep) {
  size_t p = s.find(sep);
  return p == std::string::npos ? s : s.substr(0, p);
}
std::string after_last(const std::string& s, const std::string& sep) {
  size_t p = s.rfind(sep);
  return p == std::string::npos ? s : s.substr(p + sep.size());
}

std::string today_ddmmmyyyy() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%d %b %Y", &tm);
  return buf;
}

}  // namespace

ChatTemplate ChatTemplate::from_source(const std::string& src, const Tokenizer& tok) {
  ChatTemplate t;
  if (auto bos = tok.bos_id()) t.bos_text_ = tok.token_text(*bos);
  if (auto eos = tok.eos_id()) t.eos_text_ = tok.token_text(*eos);
  if (contains(src, "<|im_start|>") && contains(src, "<|im_end|>")) {
    t.family_ = Family::ChatML;
    if (auto sys = literal_after(src, "<|im_start|>system", "<|im_end|>")) t.default_system_ = *sys;
    t.think_blocks_ = contains(src, "<think>") && contains(src, "reasoning_content");
    return t;
  }
  if (contains(src, "<|start_header_id|>") && contains(src, "<|end_header_id|>") && contains(src, "<|eot_id|>")) {
    t.family_ = Family::Llama3;
    if (contains(src, "Cutting Knowledge Date:")) {
      t.dated_system_ = true;
      // The line runs to the end of its string literal, which ends with a newline escape.
      size_t k = src.find("Cutting Knowledge Date:");
      size_t end = src.find_first_of("\"'\n", k);
      t.knowledge_line_ = unescape_jinja(src.substr(k, end - k));
      if (t.knowledge_line_.empty() || t.knowledge_line_.back() != '\n') t.knowledge_line_ += '\n';
      if (!contains(src, "strftime_now")) t.date_string_ = quoted_after(src, "set date_string = ").value_or("26 Jul 2024");
    }
    return t;
  }
  if (src.empty()) {
    std::cerr << "warning: the checkpoint has no chat template; using a plain \"role: content\" prompt\n";
  } else {
    std::cerr << "warning: chat template not recognised (neither ChatML nor Llama 3); using a plain "
                 "\"role: content\" prompt\n";
  }
  return t;
}

std::string ChatTemplate::render_chatml(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  std::string out;
  // The default system prompt goes before the first message when that is not a system one.
  if (!default_system_.empty() && !messages.empty() && messages[0].role != "system") {
    out += "<|im_start|>system\n" + default_system_ + "<|im_end|>\n";
  }
  // Qwen3 keeps reasoning only for assistant turns after the last real user query.
  size_t last_query = messages.size() - 1;
  if (think_blocks_) {
    for (size_t i = messages.size(); i-- > 0;) {
      const auto& c = messages[i].content;
      bool tool_response = c.rfind("<tool_response>", 0) == 0 && c.size() >= 16 &&
                           c.compare(c.size() - 16, 16, "</tool_response>") == 0;
      if (messages[i].role == "user" && !tool_response) {
        last_query = i;
        break;
      }
    }
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (!think_blocks_ || m.role != "assistant") {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      continue;
    }
    std::string content = m.content, reasoning;
    if (contains(content, "</think>")) {
      reasoning = strip_newlines(after_last(strip_newlines(before_first(m.content, "</think>"), false, true), "<think>"), true, false);
      content = strip_newlines(after_last(m.content, "</think>"), true, false);
    }
    bool last = i + 1 == messages.size();
    if (i > last_query && (last || !reasoning.empty())) {
      out += "<|im_start|>" + m.role + "\n<think>\n" + strip_newlines(reasoning, true, true) + "\n</think>\n\n" +
             strip_newlines(content, true, false);
    } else {
      out += "<|im_start|>" + m.role + "\n" + content;
    }
    out += "<|im_end|>\n";
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

std::string ChatTemplate::render_llama3(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  auto turn = [](const std::string& role, const std::string& content) {
    return "<|start_header_id|>" + role + "<|end_header_id|>\n\n" + py_trim(content) + "<|eot_id|>";
  };
  std::string out = bos_text_;
  size_t first = 0;
  if (dated_system_) {
    std::string system;
    if (!messages.empty() && messages[0].role == "system") {
      system = py_trim(messages[0].content);
      first = 1;
    }
    out += "<|start_header_id|>system<|end_header_id|>\n\n" + knowledge_line_ + "Today Date: " +
           (date_string_.empty() ? today_ddmmmyyyy() : date_string_) + "\n\n" + system + "<|eot_id|>";
  }
  for (size_t i = first; i < messages.size(); ++i) out += turn(messages[i].role, messages[i].content);
  if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  switch (family_) {
    case Family::ChatML: return render_chatml(messages, add_generation_prompt);
    case Family::Llama3: return render_llama3(messages, add_generation_prompt);
    case Family::Plain: break;
  }
  std::string out;
  for (const auto& m : messages) out += m.role + ": " + m.content + "\n";
  if (add_generation_prompt) out += "assistant: ";
  return out;
}

std::vector<std::string> ChatTemplate::stop_strings() const {
  switch (family_) {
    case Family::ChatML: return {"<|im_end|>"};
    case Family::Llama3: return {"<|eot_id|>"};
    case Family::Plain: break;
  }
  if (eos_text_.empty()) return {};
  return {eos_text_};
}

}  // namespace dms
