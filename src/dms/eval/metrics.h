// Token-level quality of a cache policy against the dense reference: KL(dense || policy), top-1
// agreement and the negative log-likelihood of the text, accumulated per context bucket (the
// position of the token that makes the prediction); and the agreement of two greedy
// continuations.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace dms::eval {

// Buckets of query positions: [0, b0), [b0, b1), ..., [b_last-1, b_last) and an open
// [b_last, inf) for anything longer.
class ContextBuckets {
 public:
  // `bounds` ascending and positive; throws Error otherwise.
  explicit ContextBuckets(std::vector<int64_t> bounds = {1024, 2048, 4096, 8192});
  int64_t count() const { return static_cast<int64_t>(bounds_.size()) + 1; }
  int64_t index(int64_t pos) const;
  int64_t lo(int64_t i) const { return i == 0 ? 0 : bounds_[i - 1]; }
  // -1 for the open bucket.
  int64_t hi(int64_t i) const { return i < static_cast<int64_t>(bounds_.size()) ? bounds_[i] : -1; }
  // "0-1K", "1K-2K", "8K+" (K = 1024 tokens; other bounds are written out).
  std::string label(int64_t i) const;
  const std::vector<int64_t>& bounds() const { return bounds_; }

 private:
  std::vector<int64_t> bounds_;
};

struct QualityTotals {
  int64_t tokens = 0;
  double kl_sum = 0;       // nats
  double nll_sum = 0;      // nats, of the text's next token under the policy
  int64_t top1_agree = 0;  // argmax equal to the reference's

  double mean_kl() const { return tokens ? kl_sum / static_cast<double>(tokens) : 0.0; }
  double top1() const { return tokens ? static_cast<double>(top1_agree) / static_cast<double>(tokens) : 0.0; }
  double perplexity() const;
  void add(const QualityTotals& o);
};

struct QualityStats {
  std::vector<QualityTotals> buckets;  // one per ContextBuckets bucket
  QualityTotals overall() const;
};

// Scores of each row of `logits` [N, V] (any float dtype) against `ref_logits` [N, V]:
// kl = sum_v p_ref (log p_ref - log p), nll = -log p[target], agree = argmax equal. Computed in
// fp32 from log_softmax, so identical rows give exactly kl 0.
struct RowScores {
  std::vector<double> kl, nll;
  std::vector<uint8_t> agree;
};
RowScores score_rows(const at::Tensor& ref_logits, const at::Tensor& logits, const at::Tensor& targets);

// Adds rows scored by score_rows, row r made at query position positions[r].
void accumulate(QualityStats& stats, const ContextBuckets& buckets, const RowScores& scores,
                std::span<const int64_t> positions);

// A continuation compared with the reference's, position by position over the reference's length.
struct Agreement {
  int64_t prefix = 0;    // tokens equal before the first difference
  int64_t matches = 0;   // positions with the same token
  int64_t compared = 0;  // the reference's length
};
Agreement compare_continuations(std::span<const int32_t> reference, std::span<const int32_t> other);

}  // namespace dms::eval
