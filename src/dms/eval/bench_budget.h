// The largest batch a KV budget holds: how many sequences of one context a cache of that many
// bytes admits under a policy (the memory a policy saves, as the batch it buys).
#pragma once
#include <cstdint>
#include <string>

#include "dms/eval/bench_setup.h"

namespace dms::eval {

struct BudgetResult {
  std::string policy;
  int64_t context = 0;
  int64_t max_batch = 0;   // sequences admitted
  int64_t divided = 0;     // the budget over the first sequence's bytes, for comparison
  int64_t bytes_held = 0;  // by the admitted sequences
  int64_t pool_bytes = 0;
};

// Admits sequences of `context` tokens (bench_context, in chunks of setup.chunk) into a cache
// of `budget` bytes, one after another, until one no longer fits: either a prefill chunk of it
// is refused, or with it the next decode step of every admitted sequence (one token each)
// would be. `limit` bounds the search.
BudgetResult largest_batch(const BenchSetup& setup, const std::string& policy, int64_t context, int64_t budget,
                           int64_t limit);

}  // namespace dms::eval
