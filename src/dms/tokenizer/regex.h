// A compiled PCRE2 pattern with Unicode semantics (PCRE2_UTF | PCRE2_UCP), the closest match to
// the Oniguruma regexes Hugging Face tokenizers runs its Split and ByteLevel patterns with.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dms {

class Regex {
 public:
  // Throws Error("<where>: ...") naming the pattern when it does not compile.
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Byte ranges [begin, end) of the successive non-overlapping matches in valid UTF-8 `text`.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code*, kept opaque so the header does not pull in pcre2.h
};

}  // namespace dms
