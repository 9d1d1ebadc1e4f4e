// Whole-model decode steps over caches that hold a context as each policy would keep it after
// a prefill (bench_context), the policies side by side.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dms/eval/bench_setup.h"

namespace dms::eval {

struct DecodeResult {
  std::string policy;
  int64_t context = 0, batch = 0;
  std::vector<double> step_ms;  // every timed decode step, in order
  // The cache after its context was stored, before any decode step.
  int64_t kv_bytes = 0, dense_bytes = 0, live_slots = 0;
  double compression_ratio = 1;
};

// Per policy (in the order given) a cache of `batch` sequences of `context` tokens, then
// `repeats` x `steps` timed decode steps, every sequence one token, after one untimed warm-up
// step (first touch of new pages, thread pool start). The policies take turns, `steps` at a
// time, so that whatever else the machine does falls on all of them alike.
std::vector<DecodeResult> measure_decode(const BenchSetup& setup, const std::vector<std::string>& policies,
                                         int64_t context, int64_t batch, int64_t steps, int64_t repeats);

}  // namespace dms::eval
