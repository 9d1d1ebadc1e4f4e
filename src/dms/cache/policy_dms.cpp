// Learned delayed eviction (dms-spec sections 1-2). The logit computed at token j+1 decides key
// j: d[j] = l[j+1] > 0 sets evict_at = j + window + 1, so the key stays visible to the next
// `window` queries and its slot is freed once no query from the next step on can see it. A
// step with tokens a..b decides keys a-1..b-1; key b waits for the next step.
#include <cmath>
#include <string>

#include "dms/cache/eviction_policy.h"
#include "dms/util/error.h"

namespace dms {
namespace {

// A uniform number in [0, 1) from the identity of a key (splitmix64 finaliser over the fields):
// the same key gets the same draw whatever the sequence, batch, thread or step split.
double key_uniform(uint64_t seed, int64_t layer, int64_t head, int64_t pos) {
  uint64_t x = seed;
  for (uint64_t v : {static_cast<uint64_t>(layer), static_cast<uint64_t>(head), static_cast<uint64_t>(pos)}) {
    x ^= v + 0x9e3779b97f4a7c15ULL + (x << 6) + (x >> 2);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    x ^= x >> 31;
  }
  return static_cast<double>(x >> 11) * 0x1.0p-53;
}

class DmsPolicy : public EvictionPolicy {
 public:
  explicit DmsPolicy(const DmsPolicyOptions& o) : o_(o) {
    if (o.window < 0 || o.window >= (int64_t{1} << 30))
      fail("dms policy", "window must be at least 0 and below 2^30 tokens, got " + std::to_string(o.window));
    if (o.forced_fraction > 1 || std::isnan(o.forced_fraction))
      fail("dms policy", "forced eviction fraction must be in [0, 1], got " + std::to_string(o.forced_fraction));
  }

  std::string name() const override { return "dms"; }

  void before_attention(const HeadStep& step, HeadDecision& d) const override {
    const bool forced = o_.forced_fraction >= 0;
    if (!forced && !step.logits)
      fail("dms policy", "the model has no decision heads (no DMS logits); use a forced eviction fraction or "
                         "another policy");
    for (int64_t t = 0; t < step.n_new; ++t) {
      const int64_t key = step.first_pos + t - 1;  // decided by token key + 1
      if (key < 0) continue;
      const bool evict = forced ? key_uniform(o_.seed, step.layer, step.kv_head, key) < o_.forced_fraction
                                : step.logits[t * step.logit_stride] > 0.0f;
      if (!evict) continue;
      const int32_t evict_at = static_cast<int32_t>(key + o_.window + 1);
      if (t == 0) {
        if (step.head.newest_slot() >= 0) d.newest_evict_at = evict_at;
      } else {
        d.step_evict_at[t - 1] = evict_at;
      }
    }
  }

  int64_t max_live_after(const HeadCache& head, int64_t first_pos, int64_t n_new) const override {
    return head.live() + n_new - head.expiring_by(static_cast<int32_t>(first_pos + n_new));
  }
  // The keys whose window ends with the step, and the newest key, decided by the step's first token.
  int64_t max_freed(const HeadCache& head, int64_t first_pos, int64_t n_new) const override {
    return head.expiring_by(static_cast<int32_t>(first_pos + n_new)) + (head.newest_slot() >= 0 ? 1 : 0);
  }

 private:
  DmsPolicyOptions o_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_dms_policy(const DmsPolicyOptions& options) {
  return std::make_unique<DmsPolicy>(options);
}

}  // namespace dms
