// UTF-8 helpers shared by the tokenizer stages. Invalid input is handled the way Hugging Face
// tokenizers (Rust's String::from_utf8_lossy) handles it, so decoded text matches byte for byte.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dms::utf8 {

// Length of the valid UTF-8 sequence starting at s[pos], or 0 when the bytes there are not one.
size_t valid_sequence_length(std::string_view s, size_t pos);
// Decodes the valid sequence at s[pos] (callers check valid_sequence_length first).
char32_t decode_at(std::string_view s, size_t pos, size_t len);
void append(std::string& out, char32_t cp);

// Byte offset of the first invalid sequence, or npos when `s` is valid UTF-8.
size_t first_invalid(std::string_view s);
// Replaces each maximal invalid subpart with U+FFFD (the Unicode "maximal subpart" practice).
std::string lossy(std::string_view bytes);
// Length of the trailing bytes that begin a valid sequence but do not complete it yet.
size_t incomplete_tail(std::string_view bytes);

// Unicode properties as Rust's char methods define them (used where tokenizers does).
bool is_whitespace(char32_t cp);
bool is_alphanumeric(char32_t cp);
bool is_numeric(char32_t cp);

// Calls f(codepoint, byte_offset, byte_length) for each code point of valid UTF-8 text.
template <typename F>
void for_each_char(std::string_view s, F&& f) {
  size_t pos = 0;
  while (pos < s.size()) {
    size_t len = valid_sequence_length(s, pos);
    if (len == 0) len = 1;  // callers pass validated text; never loop forever on bad bytes
    f(decode_at(s, pos, len), pos, len);
    pos += len;
  }
}

}  // namespace dms::utf8
