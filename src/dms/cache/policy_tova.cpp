// TOVA (token omission via attention): drops the keys the step's last query attends to least,
// its weights summed over the KV head's query heads. That query's own key is always kept.
#include "dms/cache/budget_policy.h"

namespace dms {
namespace {

class TovaPolicy : public BudgetPolicy {
 public:
  explicit TovaPolicy(const TovaPolicyOptions& o) : BudgetPolicy("tova", o.budget, 1) {}

  bool needs_attention_mass() const override { return true; }

 protected:
  void score(const HeadStep& step, const HeadDecision& d, int64_t, std::vector<Candidate>& c) const override {
    const int64_t newest = step.first_pos + step.n_new - 1;
    for (auto& k : c) k.score = k.pos == newest ? kProtected : d.mass_last[k.index];
  }
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_tova_policy(const TovaPolicyOptions& options) {
  return std::make_unique<TovaPolicy>(options);
}

}  // namespace dms
