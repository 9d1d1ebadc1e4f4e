#include "dms/eval/matched_budget.h"

#include <algorithm>
#include <cmath>

#include "dms/util/error.h"

namespace dms::eval {

double budget_compression(std::span<const int64_t> seen, double ratio, int64_t min_tokens) {
  if (seen.empty()) return 1;
  double sum = 0;
  for (int64_t s : seen) {
    if (s <= 0) {
      sum += 1;
      continue;
    }
    const auto limit = std::max(min_tokens, static_cast<int64_t>(std::ceil(static_cast<double>(s) / ratio)));
    sum += static_cast<double>(s) / static_cast<double>(std::min(s, limit));
  }
  return sum / static_cast<double>(seen.size());
}

double matched_ratio(std::span<const int64_t> seen, double target, int64_t min_tokens) {
  if (!(target >= 1)) fail("matched budget", "target compression ratio must be at least 1");
  if (min_tokens < 1) fail("matched budget", "min_tokens must be at least 1");
  // CR(R) does not decrease with R and stops growing at R = the longest sequence.
  double lo = 1, hi = 1;
  for (int64_t s : seen) hi = std::max(hi, static_cast<double>(s));
  if (budget_compression(seen, hi, min_tokens) < target) return hi;
  if (budget_compression(seen, lo, min_tokens) >= target) return lo;
  for (int i = 0; i < 100 && hi - lo > 1e-9 * hi; ++i) {
    const double mid = 0.5 * (lo + hi);
    (budget_compression(seen, mid, min_tokens) >= target ? hi : lo) = mid;
  }
  // CR is a step function: take whichever side of the step lands nearer.
  const double above = budget_compression(seen, hi, min_tokens), below = budget_compression(seen, lo, min_tokens);
  return std::abs(above - target) <= std::abs(target - below) ? hi : lo;
}

bool within_tolerance(double measured, double target, double tolerance) {
  return target > 0 && std::abs(measured / target - 1.0) <= tolerance;
}

}  // namespace dms::eval
