// Added tokens (special and user-defined) and how they are found in text before any other stage
// runs, following Hugging Face: leftmost-longest matching, single_word, lstrip/rstrip, and
// normalized tokens matched on normalized text.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dms {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool lstrip = false, rstrip = false, single_word = false;
  bool normalized = false;
};

// A stretch of input: either plain text (id < 0) or one added token.
struct TextSegment {
  std::string text;
  int32_t id = -1;
  bool at_start = false;  // the plain text that begins the input
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // Tokens with `normalized` set go in the matcher for normalized text, the rest in the raw one.
  AddedTokenMatcher(const std::vector<AddedToken>& tokens, bool normalized);

  // Splits `text` around matches; plain segments keep their `at_start` from `in_start`.
  void split(const std::string& text, bool in_start, std::vector<TextSegment>& out) const;
  bool empty() const { return tokens_.empty(); }

 private:
  std::vector<AddedToken> tokens_;
  std::vector<std::vector<uint32_t>> by_first_byte_;  // candidates per first byte, longest first
};

}  // namespace dms
