// PagedKVCache accounting: what each sequence and each pool holds, and how much that saves.
#include <algorithm>
#include <string>
#include <unordered_map>

#include "dms/cache/paged_kv_cache.h"
#include "dms/kernels/cpu/kv_quant.h"

namespace dms {
namespace {

// The bytes one token's keys and values take in `heads` (layer, KV head) pairs of a dense cache.
int64_t dense_bytes_per_token(int64_t heads, at::ScalarType kv_dtype, int64_t head_dim) {
  return heads * 2 * cpu::kv_row_bytes(kv_dtype, head_dim);
}

}  // namespace

int64_t PagedKVCache::tokens_seen(SequenceId id) const { return find(id, "tokens_seen").seen; }

const HeadCache& PagedKVCache::head(SequenceId id, int64_t layer, int64_t kv_head) const {
  if (layer < 0 || layer >= n_layers_ || kv_head < 0 || kv_head >= n_kv_)
    fail("kv cache", "no layer " + std::to_string(layer) + " KV head " + std::to_string(kv_head));
  return find(id, "head").heads[layer * n_kv_ + kv_head];
}

std::vector<int32_t> PagedKVCache::live_positions(SequenceId id, int64_t layer, int64_t kv_head) const {
  const HeadCache& h = head(id, layer, kv_head);
  std::vector<int32_t> positions(h.pos(), h.pos() + h.live());
  std::sort(positions.begin(), positions.end());
  return positions;
}

SequenceStats PagedKVCache::sequence_stats(SequenceId id) const {
  const Sequence& seq = find(id, "sequence_stats");
  SequenceStats s;
  s.tokens_seen = seq.seen;
  double ratios = 0;
  int64_t flagged = 0;
  for (int64_t l = 0; l < n_layers_; ++l)
    for (int64_t g = 0; g < n_kv_; ++g) {
      const HeadCache& h = seq.heads[l * n_kv_ + g];
      s.live_slots += h.live();
      s.blocks += static_cast<int64_t>(h.blocks().size());
      if (pools_[l]->shared_blocks() > 0)
        for (int32_t b : h.blocks()) s.shared_blocks += pools_[l]->shared(b) ? 1 : 0;
      flagged += h.flagged();
      ratios += static_cast<double>(seq.seen) / static_cast<double>(std::max<int64_t>(h.live(), 1));
    }
  const int64_t heads = n_layers_ * n_kv_;
  s.bytes_held = s.blocks * pools_[0]->block_bytes();
  s.dense_bytes = seq.seen * dense_bytes_per_token(heads, options_.kv_dtype, head_dim_);
  if (seq.seen > 0) {
    s.compression_ratio = ratios / static_cast<double>(heads);
    s.memory_ratio = static_cast<double>(seq.seen * heads) / static_cast<double>(std::max<int64_t>(s.live_slots, 1));
    s.eviction_fraction = static_cast<double>(flagged) / static_cast<double>(seq.seen * heads);
  }
  return s;
}

CacheStats PagedKVCache::stats() const {
  CacheStats c;
  c.compression_per_layer_head.assign(n_layers_ * n_kv_, 0.0);
  int64_t counted = 0;
  double ratio_sum = 0, flagged_share = 0;
  for (const auto& [id, seq] : sequences_) {
    const SequenceStats s = sequence_stats(id);
    ++c.sequences;
    c.tokens_seen += s.tokens_seen;
    c.live_slots += s.live_slots;
    if (seq->seen == 0) continue;
    ++counted;
    ratio_sum += s.compression_ratio;
    flagged_share += s.eviction_fraction * static_cast<double>(seq->seen);
    for (size_t i = 0; i < seq->heads.size(); ++i)
      c.compression_per_layer_head[i] +=
          static_cast<double>(seq->seen) / static_cast<double>(std::max<int64_t>(seq->heads[i].live(), 1));
  }
  if (counted > 0) {
    c.compression_ratio = ratio_sum / static_cast<double>(counted);
    int64_t seen_counted = 0;
    for (const auto& [id, seq] : sequences_) seen_counted += seq->seen;
    c.eviction_fraction = flagged_share / static_cast<double>(seen_counted);
    for (auto& r : c.compression_per_layer_head) r /= static_cast<double>(counted);
  } else {
    std::fill(c.compression_per_layer_head.begin(), c.compression_per_layer_head.end(), 1.0);
  }
  for (const auto& pool : pools_) {
    const PoolStats p{pool->num_blocks(), pool->used_blocks(), pool->free_blocks(), pool->peak_used_blocks()};
    c.blocks_used += p.used;
    c.pool_bytes += p.blocks * pool->block_bytes();
    c.pools.push_back(p);
  }
  const CacheFootprint f = footprint();
  c.bytes_held = f.bytes_held;
  c.dense_bytes = f.dense_bytes;
  c.shared_bytes_saved = f.shared_bytes_saved;
  return c;
}

CacheFootprint PagedKVCache::footprint() const {
  CacheFootprint f;
  for (const auto& pool : pools_) f.bytes_held += pool->used_blocks() * pool->block_bytes();
  const int64_t dense_per_token = dense_bytes_per_token(n_layers_ * n_kv_, options_.kv_dtype, head_dim_);
  int64_t blocks = 0;  // held by each sequence, shared ones once per holder
  for (const auto& [id, seq] : sequences_) {
    for (const HeadCache& h : seq->heads) blocks += static_cast<int64_t>(h.blocks().size());
    f.dense_bytes += seq->seen * dense_per_token;
  }
  f.shared_bytes_saved = (pools_.empty() ? 0 : blocks * pools_[0]->block_bytes()) - f.bytes_held;
  return f;
}

int64_t PagedKVCache::blocks_held_only_by(const std::vector<SequenceId>& ids) const {
  int64_t n = 0;
  std::unordered_map<int32_t, int32_t> held;  // block -> its holders among `ids`
  for (int64_t l = 0; l < n_layers_; ++l) {
    held.clear();
    for (SequenceId id : ids) {
      const Sequence& seq = find(id, "blocks_held_only_by");
      for (int64_t g = 0; g < n_kv_; ++g)
        for (int32_t b : seq.heads[l * n_kv_ + g].blocks()) ++held[b];
    }
    for (const auto& [b, holders] : held) n += holders == pools_[l]->holders(b) ? 1 : 0;
  }
  return n;
}

}  // namespace dms
