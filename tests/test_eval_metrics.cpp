// The evaluation's arithmetic against plain re-derivations in the test: KL, NLL and top-1 of
// random logits (in double, one row at a time), context buckets, the agreement of two
// continuations, the matched-budget rule, and passkey answer scoring.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "dms/eval/matched_budget.h"
#include "dms/eval/metrics.h"
#include "dms/eval/retrieval.h"
#include "dms/util/error.h"

namespace dms::eval {
namespace {

// log softmax of one row, in double.
std::vector<double> log_softmax_row(const at::Tensor& row) {
  const at::Tensor r = row.to(at::kDouble).contiguous();
  const double* x = r.data_ptr<double>();
  const int64_t n = r.numel();
  double top = x[0];
  for (int64_t i = 1; i < n; ++i) top = std::max(top, x[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(x[i] - top);
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] - top - std::log(sum);
  return out;
}

int64_t argmax(const std::vector<double>& v) { return std::max_element(v.begin(), v.end()) - v.begin(); }

TEST(EvalMetrics, KlOfLogitsAgainstThemselvesIsZero) {
  at::manual_seed(1);
  const at::Tensor logits = at::randn({37, 301}) * 4;
  const at::Tensor targets = at::randint(301, {37}, at::kLong);
  const RowScores s = score_rows(logits, logits, targets);
  for (size_t r = 0; r < s.kl.size(); ++r) {
    EXPECT_EQ(s.kl[r], 0.0) << "row " << r;
    EXPECT_EQ(s.agree[r], 1) << "row " << r;
  }
}

// Tolerance: fp32 log_softmax against the double re-derivation; KL values here are O(1) and the
// fp32 sum over 301 terms is good to about 1e-6 relative.
TEST(EvalMetrics, KlNllAndTop1MatchAPlainDerivation) {
  at::manual_seed(2);
  const int64_t N = 41, V = 301;
  const at::Tensor ref = at::randn({N, V}) * 3;
  const at::Tensor other = ref + at::randn({N, V}) * 0.7;
  const at::Tensor targets = at::randint(V, {N}, at::kLong);
  const RowScores s = score_rows(ref, other, targets);
  int64_t disagreements = 0;
  for (int64_t r = 0; r < N; ++r) {
    const auto lp = log_softmax_row(ref[r]), lq = log_softmax_row(other[r]);
    double kl = 0;
    for (int64_t v = 0; v < V; ++v) kl += std::exp(lp[v]) * (lp[v] - lq[v]);
    EXPECT_NEAR(s.kl[r], kl, 1e-5 * std::max(1.0, kl)) << "row " << r;
    EXPECT_GT(s.kl[r], 0.0);
    const double nll = -lq[targets[r].item<int64_t>()];
    EXPECT_NEAR(s.nll[r], nll, 1e-5 * std::max(1.0, nll)) << "row " << r;
    EXPECT_EQ(s.agree[r], argmax(lp) == argmax(lq) ? 1 : 0) << "row " << r;
    disagreements += argmax(lp) != argmax(lq);
  }
  EXPECT_GT(disagreements, 0) << "the noise should change some argmaxes, or agreement is not tested";
}

TEST(EvalMetrics, BucketsByPositionAndPerplexityFromNll) {
  const ContextBuckets b;  // 1K, 2K, 4K, 8K
  EXPECT_EQ(b.count(), 5);
  EXPECT_EQ(b.label(0), "0-1K");
  EXPECT_EQ(b.label(2), "2K-4K");
  EXPECT_EQ(b.label(4), "8K+");
  EXPECT_EQ(b.index(0), 0);
  EXPECT_EQ(b.index(1023), 0);
  EXPECT_EQ(b.index(1024), 1);
  EXPECT_EQ(b.index(8191), 3);
  EXPECT_EQ(b.index(100000), 4);
  EXPECT_EQ(ContextBuckets({16, 48}).label(1), "16-48");
  EXPECT_THROW(ContextBuckets({64, 32}), Error);

  std::mt19937 rng(3);
  std::uniform_real_distribution<double> u(0, 5);
  RowScores s;
  std::vector<int64_t> pos;
  double nll_low = 0, nll_all = 0, kl_all = 0;
  for (int64_t i = 0; i < 300; ++i) {
    s.kl.push_back(u(rng));
    s.nll.push_back(u(rng));
    s.agree.push_back(i % 3 == 0);
    pos.push_back(i * 7);
    nll_all += s.nll.back();
    kl_all += s.kl.back();
    if (pos.back() < 1024) nll_low += s.nll.back();
  }
  QualityStats q;
  accumulate(q, b, s, pos);
  EXPECT_EQ(q.buckets[0].tokens, 147);  // positions 0, 7, ..., 1022
  EXPECT_NEAR(q.buckets[0].perplexity(), std::exp(nll_low / 147), 1e-9);
  const QualityTotals all = q.overall();
  EXPECT_EQ(all.tokens, 300);
  EXPECT_NEAR(all.perplexity(), std::exp(nll_all / 300), 1e-9);
  EXPECT_NEAR(all.mean_kl(), kl_all / 300, 1e-12);
  EXPECT_NEAR(all.top1(), 100.0 / 300, 1e-12);
}

TEST(EvalMetrics, ContinuationAgreement) {
  const std::vector<int32_t> ref = {5, 6, 7, 8, 9};
  Agreement a = compare_continuations(ref, ref);
  EXPECT_EQ(a.prefix, 5);
  EXPECT_EQ(a.matches, 5);
  a = compare_continuations(ref, std::vector<int32_t>{5, 6, 1, 8, 9});
  EXPECT_EQ(a.prefix, 2);
  EXPECT_EQ(a.matches, 4);
  a = compare_continuations(ref, std::vector<int32_t>{5, 6});  // stopped early: the rest differs
  EXPECT_EQ(a.prefix, 2);
  EXPECT_EQ(a.matches, 2);
  EXPECT_EQ(a.compared, 5);

  std::mt19937 rng(4);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int32_t> x(rng() % 20), y(rng() % 20);
    for (auto& v : x) v = static_cast<int32_t>(rng() % 3);
    for (auto& v : y) v = static_cast<int32_t>(rng() % 3);
    int64_t prefix = 0, matches = 0;
    while (prefix < static_cast<int64_t>(std::min(x.size(), y.size())) && x[prefix] == y[prefix]) ++prefix;
    for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) matches += x[i] == y[i];
    a = compare_continuations(x, y);
    EXPECT_EQ(a.prefix, prefix);
    EXPECT_EQ(a.matches, matches);
    EXPECT_EQ(a.compared, static_cast<int64_t>(x.size()));
  }
}

// A budget of ratio R keeps min(seen, max(ceil(seen / R), floor)) keys, re-derived here.
double keeps(int64_t seen, double ratio, int64_t floor) {
  return static_cast<double>(std::min<int64_t>(seen, std::max<int64_t>(floor, std::ceil(seen / ratio))));
}

TEST(MatchedBudget, RatioWithinFivePercentOfAnyReachableTarget) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<int64_t> seen(1 + rng() % 6);
    for (auto& s : seen) s = 200 + static_cast<int64_t>(rng() % 5000);
    // Floors of at least 32 keys: one key more or less then moves a sequence's ratio by at most
    // about 3%, so the nearest uniform ratio is well within 5% (with a handful of keys it need not be).
    const int64_t floor = 32 + static_cast<int64_t>(rng() % 128);
    // A target DMS could reach: a random keep count per sequence, at least the floor.
    double target = 0;
    for (int64_t s : seen) target += static_cast<double>(s) / (floor + static_cast<double>(rng() % (s - floor + 1)));
    target /= static_cast<double>(seen.size());
    const double r = matched_ratio(seen, target, floor);
    double predicted = 0;
    for (int64_t s : seen) predicted += static_cast<double>(s) / keeps(s, r, floor);
    predicted /= static_cast<double>(seen.size());
    EXPECT_NEAR(budget_compression(seen, r, floor), predicted, 1e-12);
    EXPECT_TRUE(within_tolerance(predicted, target)) << "target " << target << ", got " << predicted << " at R " << r;
  }
}

TEST(MatchedBudget, EqualLengthsGiveTheTargetRatioItself) {
  const std::vector<int64_t> seen(4, 4096);
  for (double target : {1.0, 1.5, 2.91, 4.0, 7.3}) {
    const double r = matched_ratio(seen, target, 64);
    EXPECT_NEAR(4096 / keeps(4096, r, 64), target, target * 1e-3) << target;
  }
  // Out of reach of a floor of 1024 keys: the most the floor allows.
  EXPECT_NEAR(budget_compression(seen, matched_ratio(seen, 8.0, 1024), 1024), 4.0, 1e-12);
  EXPECT_FALSE(within_tolerance(4.0, 8.0));
  EXPECT_TRUE(within_tolerance(4.19, 4.0));
  EXPECT_FALSE(within_tolerance(4.21, 4.0));
}

TEST(Retrieval, AnswerCountsOnlyWhenItAppearsAsANumber) {
  EXPECT_TRUE(answer_found(" 58213.", "58213"));
  EXPECT_TRUE(answer_found("The pass key is 58213", "58213"));
  EXPECT_TRUE(answer_found("58213", "58213"));
  EXPECT_TRUE(answer_found("is 158213 or 58213?", "58213"));  // a later standalone occurrence
  EXPECT_FALSE(answer_found(" 5821", "58213"));
  EXPECT_FALSE(answer_found(" 582134", "58213"));
  EXPECT_FALSE(answer_found(" 958213", "58213"));
  EXPECT_FALSE(answer_found(" 58 213", "58213"));
  EXPECT_FALSE(answer_found("", "58213"));
  EXPECT_FALSE(answer_found(" the pass key", "58213"));
}

}  // namespace
}  // namespace dms::eval
