// H2O (heavy-hitter oracle): the most recent keys plus those that have received the most
// attention so far, summed over every query since they were stored and over the group's heads.
#include <cmath>

#include "dms/cache/budget_policy.h"
#include "dms/util/error.h"

namespace dms {
namespace {

const H2OPolicyOptions& checked(const H2OPolicyOptions& o) {
  if (!(o.recent_share >= 0 && o.recent_share <= 1))
    fail("h2o policy", "recent share must be in [0, 1], got " + std::to_string(o.recent_share));
  return o;
}

class H2OPolicy : public BudgetPolicy {
 public:
  explicit H2OPolicy(const H2OPolicyOptions& o)
      : BudgetPolicy("h2o", checked(o).budget, 1), recent_share_(o.recent_share) {}

  bool needs_attention_mass() const override { return true; }

 protected:
  void score(const HeadStep& step, const HeadDecision& d, int64_t keep, std::vector<Candidate>& c) const override {
    const int64_t recent = static_cast<int64_t>(std::floor(keep * recent_share_));
    const int64_t live = step.head.live(), first_recent = static_cast<int64_t>(c.size()) - recent;
    for (int64_t i = 0; i < static_cast<int64_t>(c.size()); ++i) {
      Candidate& k = c[i];
      const double accumulated = k.index < live ? step.head.score()[k.index] : 0.0;
      k.score = i >= first_recent ? kProtected : accumulated + d.mass_sum[k.index];
    }
  }

 private:
  double recent_share_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_h2o_policy(const H2OPolicyOptions& options) {
  return std::make_unique<H2OPolicy>(options);
}

}  // namespace dms
