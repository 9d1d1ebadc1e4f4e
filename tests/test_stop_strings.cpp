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

TEST(StopStrings, StreamedOutputEqualsTextBeforeFirstStop) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 2000; ++trial) {
    const std::string text = random_text(rng, 1 + rng() % 40);
    std::vector<std::string> stops;
    for (int i = 0, n = static_cast<int>(rng() % 3); i < n; ++i) stops.push_back(random_text(rng, 1 + rng() % 5));
    size_t first = std::string::npos;
    for (const auto& s : stops) first = std::min(first, text.find(s));
    const std::string expect = text.substr(0, first);

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
    EXPECT_EQ(m.stopped(), first != std::string::npos);
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
