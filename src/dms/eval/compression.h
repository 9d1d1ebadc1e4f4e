// What a policy kept: compression ratio (tokens seen / keys stored, dms-spec section 2) and
// eviction fraction (keys flagged or evicted / tokens seen), per (layer, KV head) and overall,
// measured on each sequence when it ends and averaged over sequences.
//
// Two overall ratios. `compression_ratio` is the spec's: the mean over (layer, KV head) of each
// head's ratio. `memory_ratio` is keys a dense cache holds over keys held, summed over heads:
// what the memory shrinks by. They agree when every head keeps the same number of keys (the
// budget baselines); for a policy whose heads differ (trained DMS) the mean of ratios is larger,
// since one head keeping little counts as much as one keeping everything. Baselines are matched
// on memory_ratio: the same memory, not the same mean.
#pragma once
#include <cstdint>
#include <vector>

#include "dms/cache/paged_kv_cache.h"

namespace dms::eval {

// One sequence at its end.
struct SequenceCompression {
  int64_t seen = 0;
  double compression_ratio = 1;  // mean over (layer, KV head)
  double memory_ratio = 1;       // dense keys / keys held, summed over (layer, KV head)
  double eviction_fraction = 0;
  double kv_bytes_ratio = 1;     // bytes its blocks hold / bytes a dense cache would hold
  std::vector<double> ratio_per_head, eviction_per_head;  // [layer * n_kv + head]
};

// Everything, per head included, of a sequence still in `cache`.
SequenceCompression measure_sequence(const PagedKVCache& cache, SequenceId id);
// The totals only, from the statistics the engine keeps of a finished request.
SequenceCompression from_stats(const SequenceStats& stats);

struct CompressionStats {
  int64_t n_layers = 0, n_kv_heads = 0;
  std::vector<SequenceCompression> sequences;

  // Means over sequences.
  double compression_ratio() const;
  double memory_ratio() const;
  double eviction_fraction() const;
  double kv_bytes_ratio() const;
  std::vector<double> ratio_per_head() const;
  std::vector<double> eviction_per_head() const;
  // Means over each layer's KV heads.
  std::vector<double> ratio_per_layer() const;
  std::vector<double> eviction_per_layer() const;
  std::vector<int64_t> seen() const;
};

}  // namespace dms::eval
