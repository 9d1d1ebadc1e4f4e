// N samples of one prompt through the engine: the prompt prefilled once and forked (its blocks
// shared, copy-on-write, and read once per step), or prefilled by each sample on its own.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dms/eval/bench_setup.h"

namespace dms::eval {

struct SamplesResult {
  std::string policy;
  int64_t context = 0, samples = 0, tokens = 0;
  bool shared = true;
  std::vector<double> first_token_s;        // per repeat: from the start until every sample has its first token
  std::vector<double> decode_tokens_per_s;  // per repeat: tokens generated after that, over the time after it
  int64_t peak_bytes_held = 0;              // K and V the cache held at its largest (the last repeat)
  int64_t peak_dense_bytes = 0;             // what a dense cache of N separate copies would have held
};

// Per policy (in the order given; they take turns per repeat) `samples` samples of `tokens`
// tokens each (temperature 1, seeds 0..N-1, no stop token) of one prompt of `context` random
// tokens, prefill chunks of setup.chunk, all samples decoding together. `shared`: one prefill
// forked into the samples (Engine::submit_samples); else each sample is a request of its own.
std::vector<SamplesResult> measure_samples(const BenchSetup& setup, const std::vector<std::string>& policies,
                                           int64_t context, int64_t samples, int64_t tokens, bool shared,
                                           int64_t repeats);

}  // namespace dms::eval
