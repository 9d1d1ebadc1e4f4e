// Filling a cache with a long context without running the model over it: benchmarks start
// from contexts of thousands of tokens, and what a decode step costs depends on how many keys
// the policy kept, not on their values.
#pragma once
#include <ATen/ATen.h>

#include <utility>

#include "dms/cache/paged_kv_cache.h"
#include "dms/model/config.h"

namespace dms::eval {

// Random keys and values, [rows, KV heads, head dim] each, in `dtype` (fp32 for q8: the cache
// quantizes as it stores).
std::pair<at::Tensor, at::Tensor> synthetic_kv(const ModelConfig& config, int64_t rows, at::ScalarType dtype);

// Stores `context` tokens for a new sequence, `chunk` at a time as a prefill would (the rows
// of k and v for every layer and chunk: content does not change the cost; k and v need at
// least min(chunk, context) rows), with the decisions of the cache's policy and no attention.
// Throws CacheFull when a chunk does not fit; on any error the sequence is removed again.
SequenceId store_context(PagedKVCache& cache, const at::Tensor& k, const at::Tensor& v, int64_t context, int64_t chunk);

}  // namespace dms::eval
