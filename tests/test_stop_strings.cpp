// StopStringMatcher against a direct search of the whole text, for random texts, stop strings
// and ways of cutting the text into streamed pieces.
#include <gtest/gtest.h>

#include <random>

#include "dms/engine/stop_strings.h"

namespace dms {
namespace {

std::string random_text(std::mt19937& rng, size_t n) {
  std::uniform_int_distribution<int> c(0, 2);  // a small alphabet makes partial matches common
  std::string s;
  for (size_t i = 0; i < n; ++i) s += static_cast<char>('a' + c(rng));
  return s;
}

// The text before the first stop string to be completed, reading `text` one byte at a time.
std::string text_before_first_completed_stop(const std::string& text, const std::vector<std::string>& stops,
                                             bool* found) {
  for (size_t end = 1; end <= text.size(); ++end) {
    size_t longest = 0;
    for (const auto& s : stops)
      if (s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0) longest = std::max(longest, s.size());
    if (longest) {
      *found = true;
      return text.substr(0, end - longest);
    }
  }
  *found = false;
  return text;
}

TEST(StopStrings, StreamedOutputEqualsTextBeforeFirstCompletedStop) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 2000; ++trial) {
    const std::string text = random_text(rng, 1 + rng() % 40);
    std::vector<std::string> stops;
    for (int i = 0, n = static_cast<int>(rng() % 3); i < n; ++i) stops.push_back(random_text(rng, 1 + rng() % 5));
    bool found = false;
    const std::string expect = text_before_first_completed_stop(text, stops, &found);

    StopStringMatcher m(stops);
    std::string out;
    for (size_t i = 0; i < text.size();) {
      const size_t len = 1 + rng() % 4;
      out += m.push(text.substr(i, len));
      i += len;
      ASSERT_EQ(expect.compare(0, out.size(), out), 0) << "emitted text that is not before the stop: " << out;
    }
    out += m.flush();
    EXPECT_EQ(out, expect) << "text '" << text << "'";
    EXPECT_EQ(m.stopped(), found);
  }
}

TEST(StopStrings, HoldsBackOnlyWhatCouldStillMatch) {
  StopStringMatcher m({"<|im_end|>"});
  EXPECT_EQ(m.push("Hello <|im"), "Hello ");
  EXPECT_EQ(m.push("ag"), "<|imag");
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.push("e <|im_e"), "e ");
  EXPECT_EQ(m.push("nd|> more"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.push("after"), "");
  EXPECT_EQ(m.flush(), "");
}

}  // namespace
}  // namespace dms
