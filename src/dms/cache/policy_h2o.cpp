// H2O (heavy-hitter oracle): the most recent keys plus those that have received the most
// attention so far, summed over every query since they were stored and over the group's heads.
#include <cmath>

#include "dms/cache/budget_selection.h"
#include "dms/util/error.h"

namespace dms {
namespace {

class H2OPolicy : public EvictionPolicy {
 public:
  explicit H2OPolicy(const H2OPolicyOptions& o) : o_(o) {
    if (!(o.recent_share >= 0 && o.recent_share <= 1))
      fail("h2o policy", "recent share must be in [0, 1], got " + std::to_string(o.recent_share));
    o.budget.validate("h2o", 1);
  }

  std::string name() const override { return "h2o"; }
  bool needs_attention_mass() const override { return true; }

  void after_attention(const HeadStep& step, HeadDecision& d) const override {
    const int64_t keep = o_.budget.limit(step.first_pos + step.n_new);
    auto c = budget_candidates(step, d);
    if (static_cast<int64_t>(c.size()) <= keep) return;
    const int64_t recent = static_cast<int64_t>(std::floor(keep * o_.recent_share));
    const int64_t live = step.head.live(), first_recent = static_cast<int64_t>(c.size()) - recent;
    for (int64_t i = 0; i < static_cast<int64_t>(c.size()); ++i) {
      Candidate& k = c[i];
      const double accumulated = k.index < live ? step.head.score()[k.index] : 0.0;
      k.score = i >= first_recent ? kProtected : accumulated + d.mass_sum[k.index];
    }
    drop_lowest(c, keep, step, d);
  }

  int64_t max_live_after(const HeadCache& head, int64_t first_pos, int64_t n_new) const override {
    return std::min(head.live() + n_new, o_.budget.limit(first_pos + n_new));
  }

 private:
  H2OPolicyOptions o_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_h2o_policy(const H2OPolicyOptions& options) {
  return std::make_unique<H2OPolicy>(options);
}

}  // namespace dms
