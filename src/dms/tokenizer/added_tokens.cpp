#include "dms/tokenizer/added_tokens.h"

#include <algorithm>

#include "dms/tokenizer/utf8.h"

namespace dms {

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens, bool normalized)
    : by_first_byte_(256) {
  for (const auto& t : tokens) {
    if (t.normalized == normalized && !t.content.empty()) tokens_.push_back(t);
  }
  for (uint32_t i = 0; i < tokens_.size(); ++i) {
    by_first_byte_[static_cast<unsigned char>(tokens_[i].content[0])].push_back(i);
  }
  for (auto& list : by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [&](uint32_t a, uint32_t b) {
      return tokens_[a].content.size() > tokens_[b].content.size();
    });
  }
}

namespace {

char32_t last_char(std::string_view s) {
  size_t pos = s.size();
  while (pos > 0 && (static_cast<unsigned char>(s[pos - 1]) & 0xC0) == 0x80) --pos;
  if (pos == 0) return 0;
  --pos;
  size_t len = utf8::valid_sequence_length(s, pos);
  return len == 0 ? 0 : utf8::decode_at(s, pos, len);
}

char32_t first_char(std::string_view s) {
  size_t len = s.empty() ? 0 : utf8::valid_sequence_length(s, 0);
  return len == 0 ? 0 : utf8::decode_at(s, 0, len);
}

bool is_word_char(char32_t c) { return c == U'_' || utf8::is_alphanumeric(c); }

}  // namespace

void AddedTokenMatcher::split(const std::string& text, bool in_start, std::vector<TextSegment>& out) const {
  auto emit_text = [&](size_t b, size_t e) {
    if (e > b) out.push_back({text.substr(b, e - b), -1, in_start && b == 0});
  };
  if (tokens_.empty()) {
    emit_text(0, text.size());
    return;
  }
  size_t emitted = 0;  // end of what has been written out
  size_t pos = 0;      // where the search for the next match resumes
  while (pos < text.size()) {
    const AddedToken* hit = nullptr;
    for (uint32_t i : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
      const auto& c = tokens_[i].content;
      if (text.compare(pos, c.size(), c) == 0) {
        hit = &tokens_[i];
        break;
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + hit->content.size();
    pos = stop;
    if (hit->single_word) {
      std::string_view before(text.data(), start), after(text.data() + stop, text.size() - stop);
      bool start_ok = before.empty() || !is_word_char(last_char(before));
      bool stop_ok = after.empty() || !is_word_char(first_char(after));
      if (!start_ok || !stop_ok) continue;
    }
    if (hit->lstrip) {
      size_t s = start;
      while (s > emitted) {
        size_t p = s - 1;
        while (p > emitted && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) --p;
        size_t len = utf8::valid_sequence_length(text, p);
        if (len == 0 || !utf8::is_whitespace(utf8::decode_at(text, p, len))) break;
        s = p;
      }
      start = s;
    }
    if (hit->rstrip) {
      while (stop < text.size()) {
        size_t len = utf8::valid_sequence_length(text, stop);
        if (len == 0 || !utf8::is_whitespace(utf8::decode_at(text, stop, len))) break;
        stop += len;
      }
      pos = stop;
    }
    emit_text(emitted, start);
    out.push_back({{}, hit->id, false});
    emitted = stop;
  }
  emit_text(emitted, text.size());
}

}  // namespace dms
