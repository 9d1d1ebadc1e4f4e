// StreamingLLM: the first `sinks` keys, which soak up attention, and the most recent ones.
#include "dms/cache/budget_selection.h"
#include "dms/util/error.h"

namespace dms {
namespace {

class StreamingPolicy : public EvictionPolicy {
 public:
  explicit StreamingPolicy(const StreamingPolicyOptions& o) : o_(o) {
    if (o.sinks < 0) fail("streaming policy", "sink count must not be negative");
    o.budget.validate("streaming", o.sinks + 1);
  }

  std::string name() const override { return "streaming"; }

  void after_attention(const HeadStep& step, HeadDecision& d) const override {
    const int64_t keep = o_.budget.limit(step.first_pos + step.n_new);
    auto c = budget_candidates(step, d);
    if (static_cast<int64_t>(c.size()) <= keep) return;
    for (auto& k : c) k.score = k.pos < o_.sinks ? kProtected : static_cast<double>(k.pos);
    drop_lowest(c, keep, step, d);
  }

  int64_t max_live_after(const HeadCache& head, int64_t first_pos, int64_t n_new) const override {
    return std::min(head.live() + n_new, o_.budget.limit(first_pos + n_new));
  }

 private:
  StreamingPolicyOptions o_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_streaming_policy(const StreamingPolicyOptions& options) {
  return std::make_unique<StreamingPolicy>(options);
}

}  // namespace dms
