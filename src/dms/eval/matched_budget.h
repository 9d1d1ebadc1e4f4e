// Matched compression: a budget policy (streaming, h2o, tova) is compared with DMS at the
// memory ratio DMS actually reached on the same sequences, measured rather than assumed. A
// budget keeps the same number of keys in every head, so for it the memory ratio and the mean of
// per-head ratios are one number, CR below.
//
// A budget of ratio R keeps min(seen, max(ceil(seen / R), min_tokens)) keys per head, so on
// sequences that saw seen_d tokens its compression ratio is known in advance:
//   CR(R) = mean_d seen_d / min(seen_d, max(ceil(seen_d / R), min_tokens)).
// matched_ratio picks the R whose CR(R) is nearest the DMS one (R = the DMS ratio itself when
// every sequence is long enough for the floor not to matter); the baseline is then run and
// its compression measured again, and within_tolerance is the check.
#pragma once
#include <cstdint>
#include <span>

namespace dms::eval {

// The compression ratio a budget of ratio R reaches on sequences of `seen` tokens.
double budget_compression(std::span<const int64_t> seen, double ratio, int64_t min_tokens);

// The ratio R >= 1 whose budget_compression is nearest `target`. When no R reaches it (the
// floor keeps too many keys) the largest reachable one.
double matched_ratio(std::span<const int64_t> seen, double target, int64_t min_tokens);

// |measured / target - 1| <= tolerance (the rule: 5%).
constexpr double kMatchTolerance = 0.05;
bool within_tolerance(double measured, double target, double tolerance = kMatchTolerance);

}  // namespace dms::eval
