// The part the budget policies (streaming, h2o, tova) share, as kvpress's ScorerPress: after a
// step, every key the head could keep is a candidate; if there are more than the budget, the
// policy scores them and the lowest-scored ones that it does not protect are dropped. A
// budget policy writes only its score.
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "dms/cache/eviction_policy.h"

namespace dms {

struct Candidate {
  int64_t pos;
  int64_t index;  // < head.live(): a cached slot; otherwise step key index - head.live()
  double score;   // lowest dropped first; kProtected never
};

constexpr double kProtected = std::numeric_limits<double>::infinity();

class BudgetPolicy : public EvictionPolicy {
 public:
  // Throws Error naming the policy when `budget` cannot hold the `protect` keys it never evicts
  // (Budget::validate).
  BudgetPolicy(std::string name, const Budget& budget, int64_t protect);

  std::string name() const final { return name_; }
  void after_attention(const HeadStep& step, HeadDecision& d) const final;
  bool acts_after_attention() const final { return true; }
  int64_t max_live_after(const HeadCache& head, int64_t first_pos, int64_t n_new) const final;
  int64_t max_freed(const HeadCache& head, int64_t first_pos, int64_t n_new) const final;

 protected:
  // Sets every candidate's score. Called only when the head has more than `keep` candidates
  // (the step's budget); they come in position order, scores 0. Called concurrently for
  // different heads.
  virtual void score(const HeadStep& step, const HeadDecision& d, int64_t keep,
                     std::vector<Candidate>& candidates) const = 0;

 private:
  std::string name_;
  Budget budget_;
};

}  // namespace dms
