// Keeps every key: the reference the compressed caches are measured against.
#include "dms/cache/eviction_policy.h"

namespace dms {
namespace {

class DensePolicy : public EvictionPolicy {
 public:
  std::string name() const override { return "dense"; }
  int64_t max_live_after(const HeadCache& head, int64_t, int64_t n_new) const override { return head.live() + n_new; }
  int64_t max_freed(const HeadCache&, int64_t, int64_t) const override { return 0; }
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_dense_policy() { return std::make_unique<DensePolicy>(); }

}  // namespace dms
