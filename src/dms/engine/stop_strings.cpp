#include "dms/engine/stop_strings.h"

#include <algorithm>

namespace dms {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) {
  for (auto& s : stops)
    if (!s.empty()) stops_.push_back(std::move(s));
}

std::string StopStringMatcher::push(const std::string& text) {
  if (stopped_) return {};
  pending_ += text;
  // The stop string that completes first wins (the earliest-starting one if several end together),
  // so the result does not depend on how the text was cut into pieces.
  size_t best_end = std::string::npos, best_start = 0;
  for (const auto& s : stops_) {
    const size_t at = pending_.find(s);
    if (at == std::string::npos) continue;
    if (at + s.size() < best_end || (at + s.size() == best_end && at < best_start)) {
      best_end = at + s.size();
      best_start = at;
    }
  }
  if (best_end != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, best_start);
    pending_.clear();
    return out;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& s : stops_)
    for (size_t n = std::min(s.size() - 1, pending_.size()); n > hold; --n)
      if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopStringMatcher::flush() {
  std::string out;
  if (!stopped_) out.swap(pending_);
  return out;
}

}  // namespace dms
