// Choosing a policy by name, as the command line does.
#include "dms/cache/eviction_policy.h"

#include "dms/util/error.h"

namespace dms {

std::unique_ptr<EvictionPolicy> make_policy(const std::string& name, const PolicyOptions& o) {
  if (name == "dms") return make_dms_policy(o.dms);
  if (name == "dense") return make_dense_policy();
  if (name == "streaming") return make_streaming_policy({o.budget, o.sinks});
  if (name == "h2o") return make_h2o_policy({o.budget, o.recent_share});
  if (name == "tova") return make_tova_policy({o.budget});
  fail("--policy", "unknown eviction policy '" + name + "' (dms, dense, streaming, h2o, tova)");
}

}  // namespace dms
