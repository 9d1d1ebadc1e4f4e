#include "dms/eval/bench_budget.h"

#include <algorithm>
#include <vector>

#include "dms/eval/bench_context.h"
#include "dms/util/error.h"

namespace dms::eval {

BudgetResult largest_batch(const BenchSetup& s, const std::string& policy, int64_t context, int64_t budget,
                           int64_t limit) {
  if (context < 1 || limit < 1) fail("largest_batch", "context and limit must be at least 1");
  auto cache = s.cache_of_bytes(policy, budget);
  const auto [k, v] = synthetic_kv(s.model.info.config, std::min(context, s.chunk), s.kv_dtype);
  BudgetResult r{policy, context, 0, 0, 0, cache->stats().pool_bytes};
  std::vector<StepSequence> decode;
  int64_t first_bytes = 0;
  while (r.max_batch < limit) {
    SequenceId id;
    try {
      id = store_context(*cache, k, v, context, s.chunk);
    } catch (const CacheFull&) {
      break;
    }
    decode.push_back({id, 1});
    if (cache->blocks_short(decode) > 0) {
      cache->remove_sequence(id);
      break;
    }
    if (r.max_batch == 0) first_bytes = cache->stats().bytes_held;
    ++r.max_batch;
  }
  r.bytes_held = cache->stats().bytes_held;
  r.divided = first_bytes > 0 ? budget / first_bytes : 0;
  return r;
}

}  // namespace dms::eval
