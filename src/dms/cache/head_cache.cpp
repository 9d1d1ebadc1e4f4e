#include "dms/cache/head_cache.h"

#include <algorithm>

namespace dms {
namespace {

// pos of a slot this commit has freed: no query position is >= it, so no query sees it.
constexpr int32_t kFreeSlot = kNever;

bool pending_before(const std::pair<int32_t, int32_t>& entry, int32_t evict_at) { return entry.first < evict_at; }

}  // namespace

int64_t HeadCache::expiring_by(int32_t query_pos) const {
  auto end = std::upper_bound(pending_.begin(), pending_.end(), query_pos,
                              [](int32_t q, const std::pair<int32_t, int32_t>& e) { return q < e.first; });
  return end - pending_.begin();
}

void HeadCache::pending_insert(int32_t evict_at, int64_t slot) {
  const std::pair<int32_t, int32_t> entry{evict_at, static_cast<int32_t>(slot)};
  if (pending_.empty() || pending_.back().first <= evict_at) {
    pending_.push_back(entry);
    return;
  }
  auto at = std::upper_bound(pending_.begin(), pending_.end(), evict_at,
                             [](int32_t e, const std::pair<int32_t, int32_t>& p) { return e < p.first; });
  pending_.insert(at, entry);
}

std::deque<std::pair<int32_t, int32_t>>::iterator HeadCache::pending_find(int32_t evict_at, int64_t slot) {
  auto it = std::lower_bound(pending_.begin(), pending_.end(), evict_at, pending_before);
  while (it != pending_.end() && it->first == evict_at && it->second != slot) ++it;
  return it != pending_.end() && it->first == evict_at ? it : pending_.end();
}

int64_t HeadCache::take_slot(BlockPool& pool) {
  if (live_ == static_cast<int64_t>(blocks_.size()) * block_size_) {
    blocks_.push_back(pool.allocate());
    const size_t slots = blocks_.size() * block_size_;
    pos_.resize(slots, kFreeSlot);
    evict_at_.resize(slots, kNever);
    score_.resize(slots, 0.0f);
  }
  return live_++;
}

void HeadCache::own_block_of(int64_t slot, BlockPool& pool) {
  int32_t& block = blocks_[slot / block_size_];
  if (!pool.shared(block)) return;
  const int32_t own = pool.allocate();
  pool.copy_block(block, own);
  pool.release(block);
  block = own;
}

int64_t HeadCache::max_copies(const BlockPool& pool, int64_t max_freed) const {
  if (pool.shared_blocks() == 0) return 0;
  int64_t shared = 0;
  for (int32_t b : blocks_) shared += pool.shared(b) ? 1 : 0;
  const bool last_open = live_ % block_size_ != 0 && pool.shared(blocks_.back());
  return std::min(shared, max_freed + (last_open ? 1 : 0));
}

HeadCache HeadCache::fork(BlockPool& pool) const {
  for (int32_t b : blocks_) pool.retain(b);
  return *this;
}

void HeadCache::free_slot(int64_t slot, std::vector<int64_t>& holes) {
  pos_[slot] = kFreeSlot;
  evict_at_[slot] = kNever;
  score_[slot] = 0.0f;
  if (slot == newest_) newest_ = -1;
  holes.push_back(slot);
}

void HeadCache::move_slot(int64_t from, int64_t to, BlockPool& pool, const cpu::PoolRows& rows) {
  own_block_of(to, pool);
  rows.move(cpu::pool_row(blocks_.data(), from, block_size_), cpu::pool_row(blocks_.data(), to, block_size_));
  pos_[to] = pos_[from];
  evict_at_[to] = evict_at_[from];
  score_[to] = score_[from];
  if (evict_at_[to] != kNever) pending_find(evict_at_[to], from)->second = static_cast<int32_t>(to);
  if (newest_ == from) newest_ = to;
  pos_[from] = kFreeSlot;
  evict_at_[from] = kNever;
}

void HeadCache::compact(std::vector<int64_t>& holes, BlockPool& pool, const cpu::PoolRows& rows) {
  auto drop_trailing_holes = [&] {
    while (live_ > 0 && pos_[live_ - 1] == kFreeSlot) --live_;
  };
  for (int64_t hole : holes) {  // ascending
    drop_trailing_holes();
    if (hole >= live_) break;
    move_slot(live_ - 1, hole, pool, rows);
    --live_;
  }
  drop_trailing_holes();
  while (static_cast<int64_t>(blocks_.size()) > blocks_after(live_)) {
    pool.release(blocks_.back());
    blocks_.pop_back();
  }
  const size_t slots = blocks_.size() * block_size_;
  pos_.resize(slots);
  evict_at_.resize(slots);
  score_.resize(slots);
}

void HeadCache::redecide(int64_t slot, int32_t evict_at) {
  if (evict_at == evict_at_[slot]) return;
  withdraw_decision(slot);
  evict_at_[slot] = evict_at;
  if (evict_at != kNever) pending_insert(evict_at, slot);
}

void HeadCache::withdraw_decision(int64_t slot) {
  if (evict_at_[slot] != kNever)
    pending_.erase(pending_find(evict_at_[slot], slot));
  else
    ++flagged_;
}

void HeadCache::add_attention(const std::vector<float>& mass_sum) {
  if (mass_sum.empty()) return;
  for (int64_t s = 0; s < live_; ++s) score_[s] += mass_sum[s];
}

void HeadCache::free_expired(int32_t next_pos, std::vector<int64_t>& holes) {
  while (!pending_.empty() && pending_.front().first <= next_pos) {
    const int64_t slot = pending_.front().second;
    pending_.pop_front();
    free_slot(slot, holes);
  }
}

void HeadCache::free_dropped(const std::vector<int32_t>& slots, std::vector<int64_t>& holes) {
  for (int32_t slot : slots) {
    if (pos_[slot] == kFreeSlot) continue;  // left visibility anyway
    withdraw_decision(slot);
    free_slot(slot, holes);
  }
}

void HeadCache::count_step_flags(int64_t n_new, const HeadDecision& d) {
  for (int64_t t = 0; t < n_new; ++t) {
    const bool flagged = !d.step_evict_at.empty() && d.step_evict_at[t] != kNever;
    const bool dropped = !d.drop_step.empty() && d.drop_step[t];
    if (flagged || dropped) ++flagged_;
  }
}

void HeadCache::store_step(int64_t first_pos, int64_t n_new, const HeadDecision& d, std::vector<int64_t>& holes,
                           BlockPool& pool, const cpu::PoolRows& rows, const uint8_t* step_k, const uint8_t* step_v,
                           int64_t step_stride) {
  const int32_t next_pos = static_cast<int32_t>(first_pos + n_new);
  const int64_t live_before = live_;  // freed slots stay counted until compact: d's mass indexing
  size_t used_holes = 0;
  int64_t last_slot = -1;
  for (int64_t t = 0; t < n_new; ++t) {
    const int32_t evict_at = d.step_evict_at.empty() ? kNever : d.step_evict_at[t];
    const bool dropped = !d.drop_step.empty() && d.drop_step[t];
    if (dropped || evict_at <= next_pos) continue;  // no query from next_pos on sees it: never stored
    const int64_t slot = used_holes < holes.size() ? holes[used_holes++] : take_slot(pool);
    own_block_of(slot, pool);
    rows.write(cpu::pool_row(blocks_.data(), slot, block_size_), step_k + t * step_stride, step_v + t * step_stride);
    pos_[slot] = static_cast<int32_t>(first_pos + t);
    evict_at_[slot] = evict_at;
    score_[slot] = d.mass_sum.empty() ? 0.0f : d.mass_sum[live_before + t];
    if (evict_at != kNever) pending_insert(evict_at, slot);
    if (t == n_new - 1) last_slot = slot;
  }
  if (n_new > 0) newest_ = last_slot;
  holes.erase(holes.begin(), holes.begin() + static_cast<int64_t>(used_holes));
}

void HeadCache::commit(int64_t first_pos, int64_t n_new, const HeadDecision& d, BlockPool& pool,
                       const cpu::PoolRows& rows, const uint8_t* step_k, const uint8_t* step_v, int64_t step_stride) {
  if (newest_ >= 0) redecide(newest_, d.newest_evict_at);
  add_attention(d.mass_sum);
  std::vector<int64_t> holes;
  free_expired(static_cast<int32_t>(first_pos + n_new), holes);
  free_dropped(d.drop_cached, holes);
  std::sort(holes.begin(), holes.end());
  count_step_flags(n_new, d);
  store_step(first_pos, n_new, d, holes, pool, rows, step_k, step_v, step_stride);
  compact(holes, pool, rows);
}

void HeadCache::release(BlockPool& pool) {
  for (int32_t b : blocks_) pool.release(b);
  blocks_.clear();
  pos_.clear();
  evict_at_.clear();
  score_.clear();
  pending_.clear();
  live_ = 0;
  newest_ = -1;
}

}  // namespace dms
