// What every `dms bench` measurement shares: the model, how each compared policy's cache is
// built, the prefill chunk, and the byte counts a decode step reads. The measurements
// themselves: bench_context (filling a cache with a context), bench_decode, bench_prefill,
// bench_budget.
#pragma once
#include <ATen/ATen.h>

#include <chrono>
#include <memory>
#include <string>

#include "dms/cache/eviction_policy.h"
#include "dms/cache/paged_kv_cache.h"
#include "dms/model/loader.h"

namespace dms::eval {

// One compared cache: a policy, in the setup's KV dtype or its own ("dms:q8").
struct CacheSpec {
  std::string policy;
  at::ScalarType kv_dtype;
};

struct BenchSetup {
  const Model& model;
  // One set of settings for every compared policy: make_policy reads each policy's own fields
  // (dms its window and forced fraction, the budget policies their budget, ...).
  PolicyOptions policy;
  at::ScalarType kv_dtype = at::kBFloat16;
  int64_t block_size = kDefaultBlockSize;
  int64_t chunk = 512;  // prefill tokens per step, as the engine's step budget splits a prompt

  // A compared cache's name: a policy name, optionally followed by ":" and a KV dtype (f32, bf16,
  // f16, q8) that replaces kv_dtype for it. Error naming the name for an unknown dtype.
  CacheSpec spec(const std::string& name) const;
  // A cache for `name` (see spec) with room for `sequences` sequences of `tokens` keys kept dense
  // (dense_cache_bytes), so a measurement never runs out of blocks.
  std::unique_ptr<PagedKVCache> dense_cache(const std::string& name, int64_t sequences, int64_t tokens) const;
  // A cache for `name` of `bytes` of K and V; Error when that holds no block.
  std::unique_ptr<PagedKVCache> cache_of_bytes(const std::string& name, int64_t bytes) const;
  // K and V bytes of `live_slots` keys in `name`'s KV dtype (one slot: one key of one KV head of
  // one layer).
  int64_t live_kv_bytes(const std::string& name, int64_t live_slots) const;
};

// Bytes of the weights a decode step reads: every layer's tensors, the final norm and the
// output projection (the embedding gives only one row per token, so it counts only when tied
// to the output projection, which reads all of it).
int64_t decode_weight_bytes(const Weights& weights);

inline double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace dms::eval
