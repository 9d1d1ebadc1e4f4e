// Finds stop strings in streamed text without ever emitting part of one: text that could
// still turn into a stop string is held back until it cannot. The stream stops where the first
// stop string is completed, as a generator checking after every token would.
#pragma once
#include <string>
#include <vector>

namespace dms {

class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops);
  // Adds streamed text; returns the part that is safe to show. After a match, returns the text
  // before the stop string and stopped() is true; later pushes return nothing.
  std::string push(const std::string& text);
  // The held-back tail, once the stream has ended without a match.
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace dms
