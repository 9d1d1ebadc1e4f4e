#include "dms/eval/metrics.h"

#include <algorithm>
#include <cmath>

#include "dms/util/error.h"

namespace dms::eval {

ContextBuckets::ContextBuckets(std::vector<int64_t> bounds) : bounds_(std::move(bounds)) {
  for (size_t i = 0; i < bounds_.size(); ++i)
    if (bounds_[i] <= 0 || (i > 0 && bounds_[i] <= bounds_[i - 1]))
      fail("context buckets", "bounds must be positive and ascending");
}

int64_t ContextBuckets::index(int64_t pos) const {
  return std::upper_bound(bounds_.begin(), bounds_.end(), pos) - bounds_.begin();
}

namespace {

std::string tokens_text(int64_t n) {
  return n % 1024 == 0 ? std::to_string(n / 1024) + "K" : std::to_string(n);
}

}  // namespace

std::string ContextBuckets::label(int64_t i) const {
  if (hi(i) < 0) return tokens_text(lo(i)) + "+";
  return (i == 0 ? std::string("0") : tokens_text(lo(i))) + "-" + tokens_text(hi(i));
}

double QualityTotals::perplexity() const {
  return tokens ? std::exp(nll_sum / static_cast<double>(tokens)) : 0.0;
}

void QualityTotals::add(const QualityTotals& o) {
  tokens += o.tokens;
  kl_sum += o.kl_sum;
  nll_sum += o.nll_sum;
  top1_agree += o.top1_agree;
}

QualityTotals QualityStats::overall() const {
  QualityTotals t;
  for (const auto& b : buckets) t.add(b);
  return t;
}

RowScores score_rows(const at::Tensor& ref_logits, const at::Tensor& logits, const at::Tensor& targets) {
  if (ref_logits.dim() != 2 || logits.sizes() != ref_logits.sizes() || targets.dim() != 1 ||
      targets.size(0) != logits.size(0))
    fail("score_rows", "expected logits [N, V] twice and targets [N]");
  const at::Tensor ref_lp = at::log_softmax(ref_logits.to(at::kFloat), -1);
  const at::Tensor lp = at::log_softmax(logits.to(at::kFloat), -1);
  const at::Tensor kl = (ref_lp.exp() * (ref_lp - lp)).sum(-1).to(at::kDouble).contiguous();
  const at::Tensor nll = (-lp.gather(1, targets.to(at::kLong).unsqueeze(1)).squeeze(1)).to(at::kDouble).contiguous();
  const at::Tensor agree = (ref_lp.argmax(-1) == lp.argmax(-1)).to(at::kByte).contiguous();
  const int64_t n = logits.size(0);
  RowScores s;
  s.kl.assign(kl.data_ptr<double>(), kl.data_ptr<double>() + n);
  s.nll.assign(nll.data_ptr<double>(), nll.data_ptr<double>() + n);
  s.agree.assign(agree.data_ptr<uint8_t>(), agree.data_ptr<uint8_t>() + n);
  return s;
}

void accumulate(QualityStats& stats, const ContextBuckets& buckets, const RowScores& scores,
                std::span<const int64_t> positions) {
  if (positions.size() != scores.kl.size()) fail("accumulate", "one position per scored row expected");
  stats.buckets.resize(static_cast<size_t>(buckets.count()));
  for (size_t r = 0; r < positions.size(); ++r) {
    QualityTotals& b = stats.buckets[static_cast<size_t>(buckets.index(positions[r]))];
    ++b.tokens;
    b.kl_sum += scores.kl[r];
    b.nll_sum += scores.nll[r];
    b.top1_agree += scores.agree[r];
  }
}

Agreement compare_continuations(std::span<const int32_t> reference, std::span<const int32_t> other) {
  Agreement a;
  a.compared = static_cast<int64_t>(reference.size());
  bool diverged = false;
  for (size_t i = 0; i < reference.size(); ++i) {
    const bool same = i < other.size() && other[i] == reference[i];
    a.matches += same;
    diverged = diverged || !same;
    if (!diverged) ++a.prefix;
  }
  return a;
}

}  // namespace dms::eval
