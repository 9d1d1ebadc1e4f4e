// TOVA (token omission via attention): drops the keys the step's last query attends to least,
// its weights summed over the KV head's query heads. That query's own key is always kept.
#include "dms/cache/budget_selection.h"

namespace dms {
namespace {

class TovaPolicy : public EvictionPolicy {
 public:
  explicit TovaPolicy(const TovaPolicyOptions& o) : o_(o) { o.budget.validate("tova", 1); }

  std::string name() const override { return "tova"; }
  bool needs_attention_mass() const override { return true; }

  void after_attention(const HeadStep& step, HeadDecision& d) const override {
    const int64_t keep = o_.budget.limit(step.first_pos + step.n_new);
    auto c = budget_candidates(step, d);
    if (static_cast<int64_t>(c.size()) <= keep) return;
    const int64_t newest = step.first_pos + step.n_new - 1;
    for (auto& k : c) k.score = k.pos == newest ? kProtected : d.mass_last[k.index];
    drop_lowest(c, keep, step, d);
  }

  int64_t max_live_after(const HeadCache& head, int64_t first_pos, int64_t n_new) const override {
    return std::min(head.live() + n_new, o_.budget.limit(first_pos + n_new));
  }

 private:
  TovaPolicyOptions o_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_tova_policy(const TovaPolicyOptions& options) {
  return std::make_unique<TovaPolicy>(options);
}

}  // namespace dms
