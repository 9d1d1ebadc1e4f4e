// StreamingLLM: the first `sinks` keys, which soak up attention, and the most recent ones.
#include "dms/cache/budget_policy.h"
#include "dms/util/error.h"

namespace dms {
namespace {

const StreamingPolicyOptions& checked(const StreamingPolicyOptions& o) {
  if (o.sinks < 0) fail("streaming policy", "sink count must not be negative");
  return o;
}

class StreamingPolicy : public BudgetPolicy {
 public:
  explicit StreamingPolicy(const StreamingPolicyOptions& o)
      : BudgetPolicy("streaming", checked(o).budget, o.sinks + 1), sinks_(o.sinks) {}

 protected:
  void score(const HeadStep&, const HeadDecision&, int64_t, std::vector<Candidate>& c) const override {
    for (auto& k : c) k.score = k.pos < sinks_ ? kProtected : static_cast<double>(k.pos);
  }

 private:
  int64_t sinks_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_streaming_policy(const StreamingPolicyOptions& options) {
  return std::make_unique<StreamingPolicy>(options);
}

}  // namespace dms
