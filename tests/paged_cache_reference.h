// The independent reference the paged-cache tests compare against: plain dense attention in
// double precision over a sequence's whole history, with the visibility of dms-spec section 2
// (or any other visibility mask), and a driver that feeds the same random steps to a
// PagedKVCache and to the reference.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "dms/cache/paged_kv_cache.h"

namespace dms::test {

// A model shape with only what attention needs.
ModelConfig attention_config(int64_t n_layers, int64_t n_kv_heads, int64_t group, int64_t head_dim);

// Softmax attention in double: q [T, n_heads, D], k and v [S, n_kv, D], visible [T, S, n_kv]
// bool. Query head h reads KV head h / (n_heads / n_kv). Returns [T, n_heads, D] double.
at::Tensor masked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& visible);

// dms-spec section 2 for queries at positions first_pos .. first_pos + T - 1 over keys
// 0 .. S-1 with decision logits [S, n_kv] (the logit of token j+1 decides key j):
// query i sees key j iff j <= i and (logits[j+1] <= 0 or i - j <= window). [T, S, n_kv] bool.
at::Tensor dms_visibility(int64_t first_pos, int64_t T, const at::Tensor& logits, int64_t window);

// The keys a DMS head keeps once queries up to position last have run: key j <= last stays
// iff it is unflagged or some later query can still see it (j + window + 1 > last + 1).
std::vector<int32_t> dms_expected_live(const at::Tensor& logits_of_head, int64_t last, int64_t window);

// The values a cache of `dtype` stores for x [..., D], as double: x rounded to f32/bf16/f16, or for
// q8 (cpu::kQ8) re-derived here in plain tensor ops from kv_quant.h's rule: per group of 32
// values (of D when 32 does not divide it) scale = max |x| / 127 rounded to fp16, value =
// clamp(round(x / scale), -127, 127) * scale.
at::Tensor stored_values(const at::Tensor& x, at::ScalarType dtype);

// max |ours - ref| / max(1, max |ref|)
double relative_error(const at::Tensor& ours, const at::Tensor& ref);

// Feeds random steps to a PagedKVCache with the DMS policy (decision logits drawn so that a
// `flag_fraction` share of keys is flagged) and to the reference, and records the worst
// relative error of any layer's attention output.
class DmsDriver {
 public:
  DmsDriver(const ModelConfig& shape, const PagedCacheOptions& options, int64_t window, double flag_fraction,
            uint64_t seed);

  SequenceId add();
  // A fork of `parent` (PagedKVCache::fork_sequence) that goes on with the parent's history.
  SequenceId fork(SequenceId parent);
  void remove(SequenceId id);
  // One step of the cache and the reference; returns the step's worst relative error.
  double step(const std::vector<StepSequence>& step);
  // Random q, k, v and logits for a step of T rows of layer `layer` (one per call).
  struct Inputs {
    at::Tensor q, k, v, logits;
  };
  Inputs inputs(int64_t T);

  PagedKVCache& cache() { return *cache_; }
  // Logits [S, n_kv] the driver gave sequence `id` in `layer` so far.
  at::Tensor logits(SequenceId id, int64_t layer) const;
  int64_t window() const { return window_; }
  // What the reference rounds the keys and values to: the cache's dtype unless changed (kFloat
  // compares a q8 cache with the unquantized values).
  at::ScalarType reference_dtype;
  double worst_error() const { return worst_; }

 private:
  struct History {
    std::vector<at::Tensor> k, v, logits;  // per layer, rows in position order
  };

  ModelConfig shape_;
  PagedCacheOptions options_;
  int64_t window_;
  double flag_fraction_;
  std::unique_ptr<PagedKVCache> cache_;
  std::map<SequenceId, History> history_;
  double worst_ = 0;
};

}  // namespace dms::test
