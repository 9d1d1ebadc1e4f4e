// How big a paged cache must be for sequences kept dense: the one sizing rule of every caller
// that wants "room for everything, so nothing is ever refused or preempted" (generate without
// --kv-budget, the eval passes, the bench's decode and prefill caches).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

#include "dms/cache/paged_kv_cache.h"
#include "dms/model/config.h"

namespace dms {

// Bytes of K and V for one token across all layers and KV heads, as `kv_dtype` stores them (q8
// scales included).
int64_t kv_bytes_per_token(const ModelConfig& config, at::ScalarType kv_dtype);

// Bytes of K and V for `sequences` sequences of up to `tokens` keys each with nothing evicted.
// The slack is one block per (sequence, layer, KV head): a head of t keys holds ceil(t /
// block_size) blocks, at most (t + block_size - 1) / block_size, so tokens + block_size keys'
// worth per head always suffices, however the pools split. Only written pages take memory.
int64_t dense_cache_bytes(const ModelConfig& config, at::ScalarType kv_dtype, int64_t block_size, int64_t sequences,
                          int64_t tokens);

// Options of a cache of that size (blocks_per_layer from dense_cache_bytes).
PagedCacheOptions dense_cache_options(const ModelConfig& config, at::ScalarType kv_dtype, int64_t block_size,
                                      int64_t sequences, int64_t tokens);

}  // namespace dms
