// The per-head paged KV cache: an AttentionBackend for many sequences at once, whose memory
// follows the keys each (sequence, layer, KV head) keeps rather than the tokens it has seen.
//
// One BlockPool per layer; per sequence, one HeadCache per (layer, KV head). An eviction
// policy decides which keys stay (eviction_policy.h). A step runs like this:
//
//   PagedKVCache cache(config, {.kv_dtype = at::kBFloat16, .blocks_per_layer = n}, make_dms_policy({.window = 512}));
//   SequenceId a = cache.add_sequence(), b = cache.add_sequence();
//   cache.begin_step({{a, 100}, {b, 1}});     // throws CacheFull, changing nothing, if it cannot fit
//   // rows 0..99 are a's next 100 tokens, row 100 is b's next token, at cache.step_positions()
//   auto hidden = model.forward(tokens, cache.step_positions(), cache);   // calls attend per layer
//   cache.end_step();                          // stores what the policy kept, frees the rest
//   cache.remove_sequence(a);                  // every block back to the pools
//   SequenceId c = cache.fork_sequence(b);     // b's history, sharing b's blocks (copied on write)
//
// If the forward throws, abort_step() forgets the step and leaves the cache as it was.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "dms/cache/block_pool.h"
#include "dms/cache/eviction_policy.h"
#include "dms/cache/head_cache.h"
#include "dms/kernels/cpu/paged_attention.h"
#include "dms/model/attention.h"
#include "dms/model/config.h"
#include "dms/util/error.h"

namespace dms {

// Slots per block. A head holds at most one partly filled block, so smaller blocks waste less
// memory; the kernel works block by block, so tiny blocks pay more per-block overhead, and
// large ones were slower too (its per-block fp32 buffers take more of the L1 cache). Median
// whole-model decode step, SmolLM2-135M, 16 sequences, bf16 KV, 2 threads, block sizes
// 8 / 16 / 32 / 64 (dms bench --batches 16 --block-size N --steps 4 --repeats 3 and):
//   --policies dms --force-evict 0.875 --dms-window 512 --contexts 8192:
//       236 / 235 / 252 / 271 ms, KV held 519 / 520 / 523 / 529 MiB
//   --policies dense --contexts 4096:  503 / 431 / 571 / 553 ms
// 16 is the fastest and costs at most 16 slots per (sequence, layer, KV head).
constexpr int64_t kDefaultBlockSize = 16;

struct PagedCacheOptions {
  at::ScalarType kv_dtype = at::kFloat;  // f32, bf16, f16 or q8 (cpu::kQ8: int8 with scales, kv_quant.h)
  int64_t block_size = kDefaultBlockSize;
  int64_t blocks_per_layer = 0;          // each layer's pool (see blocks_per_layer_for)
};

using SequenceId = int64_t;

// One sequence's share of a step: its next n_tokens tokens.
struct StepSequence {
  SequenceId id;
  int64_t n_tokens;
};

// A step the pools cannot hold. Nothing changed: finish or remove sequences (preempt) and
// retry, or refuse the new ones.
struct CacheFull : Error {
  using Error::Error;
};

struct PoolStats {
  int64_t blocks = 0, used = 0, free = 0, peak_used = 0;
};

struct SequenceStats {
  int64_t tokens_seen = 0;
  int64_t live_slots = 0;     // summed over layers and KV heads
  int64_t blocks = 0;         // summed over layers and KV heads
  int64_t shared_blocks = 0;  // of those, blocks another sequence holds too (fork_sequence)
  int64_t bytes_held = 0;     // K and V in those blocks, shared ones included
  int64_t dense_bytes = 0;    // K and V a dense cache holds for tokens_seen tokens
  double compression_ratio = 1;   // mean over (layer, KV head) of tokens seen / keys stored
  double memory_ratio = 1;        // tokens seen * layers * KV heads / live_slots: dense keys over keys held
  double eviction_fraction = 0;   // keys flagged or evicted / (tokens seen * layers * KV heads)
};

struct CacheStats {
  int64_t sequences = 0;
  int64_t tokens_seen = 0;    // summed over sequences
  int64_t live_slots = 0;
  int64_t blocks_used = 0;    // summed over the pools; a shared block counts once
  int64_t bytes_held = 0;     // K and V in those blocks
  int64_t dense_bytes = 0;    // K and V a dense cache holds for the sequences, each on its own
  int64_t shared_bytes_saved = 0;  // the sequences' bytes_held summed, less bytes_held
  int64_t pool_bytes = 0;     // K and V the pools can hold in all
  // dms-spec section 2: tokens seen / tokens stored, averaged over layers and (sequence, KV
  // head) pairs; sequences that have seen no token yet are left out.
  double compression_ratio = 1;
  double eviction_fraction = 0;
  std::vector<double> compression_per_layer_head;  // [layer * n_kv + head], mean over sequences
  std::vector<PoolStats> pools;                    // per layer
};

// stats()'s byte counts alone, without its tables (an engine records them every step).
struct CacheFootprint {
  int64_t bytes_held = 0, dense_bytes = 0, shared_bytes_saved = 0;
};

class PagedKVCache : public AttentionBackend {
 public:
  PagedKVCache(const ModelConfig& config, const PagedCacheOptions& options, std::unique_ptr<EvictionPolicy> policy);

  // Pool size per layer for `bytes` of K and V across all layers.
  static int64_t blocks_per_layer_for(const ModelConfig& config, at::ScalarType kv_dtype, int64_t block_size,
                                      int64_t bytes);

  SequenceId add_sequence();
  // A new sequence with `parent`'s history: it shares every block with the parent (no copy, no
  // new memory) and from now on decides, evicts and grows on its own; a block is copied when
  // one of its holders first writes into it. Not during a step.
  SequenceId fork_sequence(SequenceId parent);
  // Gives every block of the sequence back. Not during a step.
  void remove_sequence(SequenceId id);
  bool contains(SequenceId id) const { return sequences_.count(id) != 0; }
  std::vector<SequenceId> sequences() const;

  // Blocks the most constrained pool lacks for `step` (0 when it fits), counting the most
  // keys each head could keep whatever the policy decides.
  int64_t blocks_short(const std::vector<StepSequence>& step) const;
  // Declares the next step: each sequence's tokens continue its history; the forward's rows
  // are the sequences' tokens in this order. Throws CacheFull when blocks_short > 0 and Error
  // for an unknown or repeated sequence, an empty share or an open step; either way nothing
  // changes.
  void begin_step(const std::vector<StepSequence>& step);
  // [T] int64 positions of the step's rows, for the model's forward.
  const at::Tensor& step_positions() const { return positions_; }
  int64_t step_rows() const { return step_rows_; }
  bool in_step() const { return in_step_; }

  // Every layer once per step, in any order. Nothing is stored until end_step.
  at::Tensor attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& evict_logits) override;
  // Records a layer's keys and values for the step like attend, without computing attention:
  // for contexts restored or synthesised rather than run (benchmarks start from long ones).
  // Policies that weigh attention see none for these keys.
  void store(int64_t layer, const at::Tensor& k, const at::Tensor& v, const at::Tensor& evict_logits);
  // Stores the keys each policy kept and frees the slots no later query sees. Throws Error,
  // changing nothing, if a layer was not attended.
  void end_step();
  // Forgets an open step (after a failed forward); the cache is as before begin_step.
  void abort_step();

  int64_t tokens_seen(SequenceId id) const;
  SequenceStats sequence_stats(SequenceId id) const;
  CacheStats stats() const;
  CacheFootprint footprint() const;  // allocates nothing
  // Blocks (all pools) that no sequence but those of `ids` holds: what removing them would free.
  int64_t blocks_held_only_by(const std::vector<SequenceId>& ids) const;
  // Positions of the keys (sequence, layer, KV head) keeps, ascending (e.g. for a map of what
  // each head kept).
  std::vector<int32_t> live_positions(SequenceId id, int64_t layer, int64_t kv_head) const;
  const HeadCache& head(SequenceId id, int64_t layer, int64_t kv_head) const;
  const BlockPool& pool(int64_t layer) const { return *pools_.at(layer); }
  // Every pool's memory resident now (BlockPool::make_resident). Not during a step.
  void make_resident();
  const EvictionPolicy& policy() const { return *policy_; }
  const PagedCacheOptions& options() const { return options_; }
  int64_t n_layers() const { return n_layers_; }
  int64_t n_kv_heads() const { return n_kv_; }

 private:
  struct Sequence {
    SequenceId id;
    int64_t seen = 0;
    std::vector<HeadCache> heads;  // [layer * n_kv + head]
  };
  struct StepEntry {
    Sequence* seq;
    int64_t row0, n;
  };
  struct PendingLayer {
    bool attended = false;
    at::Tensor k, v;                       // the step's keys and values in the KV dtype
    std::vector<HeadDecision> decisions;   // [step entry * n_kv + head]; kept between steps
  };
  // A step of at most this many rows (a batch's decode step) leaves its K/V rows and attention
  // output for the next step to reuse; a prefill chunk's are let go.
  static constexpr int64_t kKeptRows = 64;

  const Sequence& find(SequenceId id, const char* what) const;
  std::vector<int64_t> blocks_needed(const std::vector<StepSequence>& step) const;  // per layer
  HeadStep head_step(const StepEntry& e, int64_t layer, int64_t g, const float* logits) const;
  void reset_pending();
  void check_attend_args(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& evict_logits) const;
  // attend and store: the policy's decisions for the layer, with attention when q is defined.
  at::Tensor record(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& evict_logits);

  int64_t n_layers_, n_heads_, n_kv_, head_dim_;
  PagedCacheOptions options_;
  std::unique_ptr<EvictionPolicy> policy_;
  std::vector<std::unique_ptr<BlockPool>> pools_;
  std::map<SequenceId, std::unique_ptr<Sequence>> sequences_;
  SequenceId next_id_ = 0;

  bool in_step_ = false;
  std::vector<StepEntry> step_;
  int64_t step_rows_ = 0;
  at::Tensor positions_;
  std::vector<PendingLayer> pending_;
  std::vector<cpu::AttentionItem> items_;  // record()'s, kept between calls
  at::Tensor attention_out_;                // record()'s result, kept between calls
};

}  // namespace dms
