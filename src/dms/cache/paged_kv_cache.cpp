#include "dms/cache/paged_kv_cache.h"

#include <array>
#include <set>
#include <string>

#include "dms/kernels/cpu/kv_quant.h"
#include "dms/kernels/cpu/paged_attention.h"
#include "dms/kernels/cpu/parallel.h"
#include "dms/util/kept_tensor.h"

namespace dms {
namespace {

// Positions are int32 in the slots; DMS adds its window (below 2^30) to them.
constexpr int64_t kMaxPosition = (int64_t{1} << 30) - 1;

std::string str(int64_t v) { return std::to_string(v); }

}  // namespace

PagedKVCache::PagedKVCache(const ModelConfig& config, const PagedCacheOptions& options,
                           std::unique_ptr<EvictionPolicy> policy)
    : n_layers_(config.n_layers),
      n_heads_(config.n_heads),
      n_kv_(config.n_kv_heads),
      head_dim_(config.head_dim),
      options_(options),
      policy_(std::move(policy)),
      pending_(config.n_layers) {
  if (!policy_) fail("kv cache", "no eviction policy given");
  if (n_layers_ < 1 || n_kv_ < 1 || head_dim_ < 1 || n_heads_ % n_kv_ != 0)
    fail("kv cache", "model shape needs layers, KV heads and head dim >= 1 and query heads a multiple of KV heads");
  if (options.block_size < 1 || options.block_size > 4096)
    fail("kv cache", "block size must be between 1 and 4096 slots, got " + str(options.block_size));
  for (int64_t l = 0; l < n_layers_; ++l)
    pools_.push_back(std::make_unique<BlockPool>(options.blocks_per_layer, options.block_size, head_dim_,
                                                 options.kv_dtype));
}

int64_t PagedKVCache::blocks_per_layer_for(const ModelConfig& config, at::ScalarType kv_dtype, int64_t block_size,
                                           int64_t bytes) {
  const int64_t per_block = config.n_layers * 2 * block_size * cpu::kv_row_bytes(kv_dtype, config.head_dim);
  return per_block > 0 ? bytes / per_block : 0;
}

SequenceId PagedKVCache::add_sequence() {
  auto seq = std::make_unique<Sequence>();
  seq->id = next_id_++;
  seq->heads.assign(n_layers_ * n_kv_, HeadCache(options_.block_size));
  const SequenceId id = seq->id;
  sequences_.emplace(id, std::move(seq));
  return id;
}

SequenceId PagedKVCache::fork_sequence(SequenceId parent) {
  if (in_step_) fail("kv cache", "fork_sequence(" + str(parent) + ") during a step; end or abort the step first");
  const Sequence& from = find(parent, "fork_sequence");
  auto seq = std::make_unique<Sequence>();
  seq->id = next_id_++;
  seq->seen = from.seen;
  seq->heads.reserve(from.heads.size());
  for (int64_t i = 0; i < static_cast<int64_t>(from.heads.size()); ++i)
    seq->heads.push_back(from.heads[i].fork(*pools_[i / n_kv_]));
  const SequenceId id = seq->id;
  sequences_.emplace(id, std::move(seq));
  return id;
}

void PagedKVCache::remove_sequence(SequenceId id) {
  if (in_step_) fail("kv cache", "remove_sequence(" + str(id) + ") during a step; end or abort the step first");
  auto it = sequences_.find(id);
  if (it == sequences_.end()) fail("kv cache", "remove_sequence: no sequence " + str(id));
  for (int64_t l = 0; l < n_layers_; ++l)
    for (int64_t g = 0; g < n_kv_; ++g) it->second->heads[l * n_kv_ + g].release(*pools_[l]);
  sequences_.erase(it);
}

std::vector<SequenceId> PagedKVCache::sequences() const {
  std::vector<SequenceId> ids;
  for (const auto& [id, seq] : sequences_) ids.push_back(id);
  return ids;
}

const PagedKVCache::Sequence& PagedKVCache::find(SequenceId id, const char* what) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) fail("kv cache", std::string(what) + ": no sequence " + str(id));
  return *it->second;
}

std::vector<int64_t> PagedKVCache::blocks_needed(const std::vector<StepSequence>& step) const {
  std::vector<int64_t> needed(n_layers_, 0);
  for (const auto& s : step) {
    const Sequence& seq = find(s.id, "begin_step");
    for (int64_t l = 0; l < n_layers_; ++l)
      for (int64_t g = 0; g < n_kv_; ++g) {
        const HeadCache& h = seq.heads[l * n_kv_ + g];
        const int64_t after = h.blocks_after(policy_->max_live_after(h, seq.seen, s.n_tokens));
        needed[l] += std::max<int64_t>(0, after - static_cast<int64_t>(h.blocks().size())) +
                     h.max_copies(*pools_[l], policy_->max_freed(h, seq.seen, s.n_tokens));
      }
  }
  return needed;
}

void PagedKVCache::make_resident() {
  if (in_step_) fail("kv cache", "make_resident during a step");
  for (auto& pool : pools_) pool->make_resident();
}

int64_t PagedKVCache::blocks_short(const std::vector<StepSequence>& step) const {
  const auto needed = blocks_needed(step);
  int64_t short_by = 0;
  for (int64_t l = 0; l < n_layers_; ++l) short_by = std::max(short_by, needed[l] - pools_[l]->free_blocks());
  return short_by;
}

void PagedKVCache::begin_step(const std::vector<StepSequence>& step) {
  if (in_step_) fail("kv cache", "begin_step while the previous step is open; end_step or abort_step first");
  if (step.empty()) fail("kv cache", "begin_step with no sequences");
  std::set<SequenceId> ids;
  for (const auto& s : step) {
    const Sequence& seq = find(s.id, "begin_step");
    if (!ids.insert(s.id).second) fail("kv cache", "begin_step: sequence " + str(s.id) + " appears twice");
    if (s.n_tokens < 1) fail("kv cache", "begin_step: sequence " + str(s.id) + " has " + str(s.n_tokens) + " tokens");
    if (seq.seen + s.n_tokens > kMaxPosition)
      fail("kv cache", "sequence " + str(s.id) + " would pass " + str(kMaxPosition) + " tokens");
  }
  const auto needed = blocks_needed(step);
  for (int64_t l = 0; l < n_layers_; ++l)
    if (needed[l] > pools_[l]->free_blocks())
      throw CacheFull("kv cache: the step needs up to " + str(needed[l]) + " more blocks in layer " + str(l) +
                      "'s pool, which has " + str(pools_[l]->free_blocks()) + " of " + str(pools_[l]->num_blocks()) +
                      " free (block size " + str(options_.block_size) + "); finish or remove sequences first");

  step_.clear();
  step_rows_ = 0;
  for (const auto& s : step) {
    step_.push_back({sequences_.at(s.id).get(), step_rows_, s.n_tokens});
    step_rows_ += s.n_tokens;
  }
  positions_ = at::empty({step_rows_}, at::kLong);
  auto* p = positions_.data_ptr<int64_t>();
  for (const auto& e : step_)
    for (int64_t t = 0; t < e.n; ++t) p[e.row0 + t] = e.seq->seen + t;
  reset_pending();
  in_step_ = true;
}

void PagedKVCache::reset_pending() {
  // The decisions keep their memory for the next step, and so do the rows of a small step.
  for (auto& layer : pending_) {
    layer.attended = false;
    if (layer.k.defined() && layer.k.size(0) > kKeptRows) layer.k = layer.v = at::Tensor();
  }
  if (attention_out_.defined() && attention_out_.size(0) > kKeptRows) attention_out_ = at::Tensor();
}

HeadStep PagedKVCache::head_step(const StepEntry& e, int64_t layer, int64_t g, const float* logits) const {
  return HeadStep{.head = e.seq->heads[layer * n_kv_ + g],
                  .layer = layer,
                  .kv_head = g,
                  .first_pos = e.seq->seen,
                  .n_new = e.n,
                  .logits = logits ? logits + e.row0 * n_kv_ + g : nullptr,
                  .logit_stride = n_kv_};
}

void PagedKVCache::check_attend_args(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const at::Tensor& logits) const {
  if (!in_step_) fail("kv cache", "attend outside a step (begin_step first)");
  if (layer < 0 || layer >= n_layers_) fail("kv cache", "attend: layer " + str(layer) + " out of range");
  if (pending_[layer].attended) fail("kv cache", "attend: layer " + str(layer) + " twice in one step");
  const std::array<int64_t, 3> q_shape{step_rows_, n_heads_, head_dim_}, kv_shape{step_rows_, n_kv_, head_dim_};
  if ((q.defined() && q.sizes() != at::IntArrayRef(q_shape)) || k.sizes() != at::IntArrayRef(kv_shape) ||
      v.sizes() != at::IntArrayRef(kv_shape))
    fail("kv cache", "attend: expected q [" + str(step_rows_) + ", " + str(n_heads_) + ", " + str(head_dim_) +
                         "] and k, v [" + str(step_rows_) + ", " + str(n_kv_) + ", " + str(head_dim_) + "]");
  if (logits.defined() && logits.sizes() != at::IntArrayRef({step_rows_, n_kv_}))
    fail("kv cache", "attend: expected evict_logits [" + str(step_rows_) + ", " + str(n_kv_) + "]");
}

at::Tensor PagedKVCache::attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& evict_logits) {
  check_attend_args(layer, q, k, v, evict_logits);
  return record(layer, q, k, v, evict_logits);
}

void PagedKVCache::store(int64_t layer, const at::Tensor& k, const at::Tensor& v, const at::Tensor& evict_logits) {
  check_attend_args(layer, at::Tensor(), k, v, evict_logits);
  record(layer, at::Tensor(), k, v, evict_logits);
}

at::Tensor PagedKVCache::record(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& evict_logits) {
  PendingLayer& pending = pending_[layer];
  // Stored as the pool stores them, once: q8 keys are quantized here, and the step's own queries
  // see them quantized as every later query will.
  const at::Tensor keys = cpu::to_kv_rows(k, options_.kv_dtype, &pending.k);
  const at::Tensor values = cpu::to_kv_rows(v, options_.kv_dtype, &pending.v);
  const at::Tensor logits = float_contiguous(evict_logits);
  const float* lp = logits.defined() ? logits.data_ptr<float>() : nullptr;
  const bool mass = policy_->needs_attention_mass();

  // The decisions (and their vectors) of the layer's last step are refilled: a decode step
  // allocates none.
  std::vector<HeadDecision>& decisions = pending.decisions;
  decisions.resize(step_.size() * n_kv_);
  items_.resize(decisions.size());
  std::vector<cpu::AttentionItem>& items = items_;
  cpu::parallel_for(0, static_cast<int64_t>(decisions.size()), 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const StepEntry& e = step_[i / n_kv_];
      const int64_t g = i % n_kv_;
      const HeadCache& h = e.seq->heads[layer * n_kv_ + g];
      HeadDecision& d = decisions[i];
      d.newest_evict_at = h.newest_slot() >= 0 ? h.evict_at()[h.newest_slot()] : kNever;
      d.step_evict_at.assign(e.n, kNever);
      d.drop_cached.clear();
      d.drop_step.assign(e.n, 0);
      d.mass_sum.clear();
      d.mass_last.clear();
      policy_->before_attention(head_step(e, layer, g, lp), d);
      if (mass) {
        d.mass_sum.assign(h.live() + e.n, 0.0f);
        d.mass_last.assign(h.live() + e.n, 0.0f);
      }
      items[i] = cpu::AttentionItem{.kv_head = g,
                                    .row0 = e.row0,
                                    .n_queries = e.n,
                                    .first_pos = e.seq->seen,
                                    .blocks = h.blocks().data(),
                                    .n_cached = h.live(),
                                    .pos = h.pos(),
                                    .evict_at = h.evict_at(),
                                    .patched_slot = h.newest_slot(),
                                    .patched_evict_at = d.newest_evict_at,
                                    .step_evict_at = d.step_evict_at.data(),
                                    .mass_sum = mass ? d.mass_sum.data() : nullptr,
                                    .mass_last = mass ? d.mass_last.data() : nullptr};
    }
  });
  const at::Tensor out = q.defined() ? cpu::paged_attention(float_contiguous(q), pools_[layer]->keys(),
                                                            pools_[layer]->values(), keys, values, items,
                                                            cpu::default_cpu_isa(), &attention_out_)
                                     : at::Tensor();
  if (policy_->acts_after_attention())
    cpu::parallel_for(0, static_cast<int64_t>(decisions.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        policy_->after_attention(head_step(step_[i / n_kv_], layer, i % n_kv_, lp), decisions[i]);
    });
  pending.k = keys;  // to_kv_rows stored them there unless it converted another dtype
  pending.v = values;
  pending.attended = true;
  return q.defined() && q.scalar_type() != at::kFloat ? out.to(q.scalar_type()) : out;
}

void PagedKVCache::end_step() {
  if (!in_step_) fail("kv cache", "end_step without begin_step");
  for (int64_t l = 0; l < n_layers_; ++l)
    if (!pending_[l].attended) fail("kv cache", "end_step: layer " + str(l) + " was not attended in this step");
  const int64_t per_layer = static_cast<int64_t>(step_.size()) * n_kv_;
  cpu::parallel_for(0, n_layers_ * per_layer, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t l = i / per_layer, j = i % per_layer, g = j % n_kv_;
      const StepEntry& e = step_[j / n_kv_];
      const PendingLayer& p = pending_[l];
      const cpu::PoolRows rows(pools_[l]->keys(), pools_[l]->values());
      const int64_t row_bytes = rows.row_bytes();
      const auto* k = static_cast<const uint8_t*>(p.k.data_ptr()) + (e.row0 * n_kv_ + g) * row_bytes;
      const auto* v = static_cast<const uint8_t*>(p.v.data_ptr()) + (e.row0 * n_kv_ + g) * row_bytes;
      e.seq->heads[l * n_kv_ + g].commit(e.seq->seen, e.n, p.decisions[j], *pools_[l], rows, k, v,
                                         n_kv_ * row_bytes);
    }
  });
  for (const auto& e : step_) e.seq->seen += e.n;
  abort_step();
}

void PagedKVCache::abort_step() {
  reset_pending();
  step_.clear();
  step_rows_ = 0;
  positions_ = at::Tensor();
  in_step_ = false;
}

}  // namespace dms
