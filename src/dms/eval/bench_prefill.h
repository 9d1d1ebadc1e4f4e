// Chunked prefill throughput: one sequence's prompt through the whole model, each policy in
// turn.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dms/eval/bench_setup.h"

namespace dms::eval {

struct PrefillResult {
  std::string policy;
  int64_t context = 0;
  std::vector<double> tokens_per_s;  // per repeat
};

// A prompt of `context` random tokens in chunks of setup.chunk through a fresh cache (the
// engine's prefill; only the last row's logits, as sampling needs), timed from the first chunk
// to the last; per policy, in the order given. The policies take turns per repeat.
std::vector<PrefillResult> measure_prefill(const BenchSetup& setup, const std::vector<std::string>& policies,
                                           int64_t context, int64_t repeats);

}  // namespace dms::eval
