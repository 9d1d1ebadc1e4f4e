// The keys one (sequence, layer, KV head) keeps, and one step's decisions about them.
#pragma once
#include <cstdint>
#include <deque>
#include <utility>
#include <vector>

#include "dms/cache/block_pool.h"
#include "dms/kernels/cpu/cache_write.h"
#include "dms/kernels/cpu/paged_attention.h"

namespace dms {

using cpu::kNever;

// What one step decided about one head's keys: filled by the eviction policy while the layer
// is attended, applied by HeadCache::commit when the step ends.
struct HeadDecision {
  // evict_at for the head's newest cached key (DMS decides key first_pos - 1 in this step).
  int32_t newest_evict_at = kNever;
  std::vector<int32_t> step_evict_at;  // [n_new] evict_at of the step's own keys
  std::vector<int32_t> drop_cached;    // cached slots a budget policy evicts
  std::vector<uint8_t> drop_step;      // [n_new] step keys a budget policy evicts
  // Attention each key received in this step, when the policy asked for it: cached slots
  // 0 .. live-1, then the step's keys (cpu::AttentionItem::mass_sum / mass_last).
  std::vector<float> mass_sum, mass_last;
};

// A block table over the layer's pool (blocks may be shared with forked sequences' heads and
// are copied before a write), and per slot: the key's position, evict_at (query
// positions from evict_at on no longer see it; kNever until a decision says otherwise) and
// the attention it has accumulated (H2O's score). Between steps slots 0 .. live()-1 all hold
// keys: a step's freed slots take its new keys first (dms-spec section 3) and any left over
// are filled by moving the last keys down, so the table holds ceil(live / block_size)
// blocks and never the high-water mark of a long prefill chunk.
class HeadCache {
 public:
  explicit HeadCache(int64_t block_size) : block_size_(block_size) {}

  int64_t live() const { return live_; }
  const std::vector<int32_t>& blocks() const { return blocks_; }
  const int32_t* pos() const { return pos_.data(); }
  const int32_t* evict_at() const { return evict_at_.data(); }
  const float* score() const { return score_.data(); }
  // Slot of the most recent key, -1 before the first step or when a policy dropped it.
  int64_t newest_slot() const { return newest_; }
  // Keys flagged for eviction (DMS) or evicted (budget policies) so far.
  int64_t flagged() const { return flagged_; }
  // Keys flagged but still stored whose evict_at <= query_pos: they go at the next commit
  // whose step ends at query_pos.
  int64_t expiring_by(int32_t query_pos) const;
  int32_t next_expiry() const { return pending_.empty() ? kNever : pending_.front().first; }

  // Applies `d` for a step of n_new tokens at first_pos ..: frees the keys no query from
  // first_pos + n_new on sees and those the policy dropped, stores the step's surviving keys
  // (K/V rows of the pool's dtype at step_k/step_v + t * step_stride bytes), compacts and
  // gives emptied blocks back. New blocks come from `pool`; the caller has checked it holds
  // enough (blocks_after).
  void commit(int64_t first_pos, int64_t n_new, const HeadDecision& d, BlockPool& pool, const cpu::PoolRows& rows,
              const uint8_t* step_k, const uint8_t* step_v, int64_t step_stride);
  // Blocks the head holds after a step that leaves `live_after` keys.
  int64_t blocks_after(int64_t live_after) const { return (live_after + block_size_ - 1) / block_size_; }
  // The most blocks a commit that frees at most `max_freed` stored keys copies because other
  // heads share them: it writes only into the blocks of the slots it frees and into the last,
  // partly filled block.
  int64_t max_copies(const BlockPool& pool, int64_t max_freed) const;
  // A copy that shares every block with this head (a forked sequence); a block is copied by
  // whichever holder first writes into it.
  HeadCache fork(BlockPool& pool) const;
  // Gives every block back.
  void release(BlockPool& pool);

 private:
  // The steps of commit, in order.
  // Gives a stored key a new evict_at (DMS decides the newest key one step late).
  void redecide(int64_t slot, int32_t evict_at);
  // H2O's score: the attention the cached keys received in this step.
  void add_attention(const std::vector<float>& mass_sum);
  // Frees the flagged keys no query from next_pos on sees, then those the policy dropped.
  void free_expired(int32_t next_pos, std::vector<int64_t>& holes);
  void free_dropped(const std::vector<int32_t>& slots, std::vector<int64_t>& holes);
  // Counts the step's keys that were flagged or dropped, stored or not.
  void count_step_flags(int64_t n_new, const HeadDecision& d);
  // Writes the step's surviving keys into the lowest holes first, then new slots; leaves the
  // unused holes in `holes` and the step's last key, if stored, as the newest.
  void store_step(int64_t first_pos, int64_t n_new, const HeadDecision& d, std::vector<int64_t>& holes,
                  BlockPool& pool, const cpu::PoolRows& rows, const uint8_t* step_k, const uint8_t* step_v,
                  int64_t step_stride);
  // Before a stored key's decision changes or its slot is freed: takes it out of pending_ if it
  // was flagged, else counts it as flagged (each key is counted once, when first flagged).
  void withdraw_decision(int64_t slot);

  int64_t take_slot(BlockPool& pool);
  // Before a write into `slot`: its block becomes this head's own (copied) if it is shared.
  void own_block_of(int64_t slot, BlockPool& pool);
  void free_slot(int64_t slot, std::vector<int64_t>& holes);
  void move_slot(int64_t from, int64_t to, BlockPool& pool, const cpu::PoolRows& rows);
  void compact(std::vector<int64_t>& holes, BlockPool& pool, const cpu::PoolRows& rows);
  void pending_insert(int32_t evict_at, int64_t slot);
  std::deque<std::pair<int32_t, int32_t>>::iterator pending_find(int32_t evict_at, int64_t slot);

  int64_t block_size_;
  std::vector<int32_t> blocks_;
  std::vector<int32_t> pos_, evict_at_;
  std::vector<float> score_;
  int64_t live_ = 0;
  int64_t newest_ = -1;
  int64_t flagged_ = 0;
  // FIFO of flagged keys still stored, as (evict_at, slot) in evict_at order: DMS flags keys
  // in position order with one window, so new entries go at the back.
  std::deque<std::pair<int32_t, int32_t>> pending_;
};

}  // namespace dms
