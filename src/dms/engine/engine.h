// Batched generation: many sequences decoded together, one forward per step over the paged
// KV cache. Sequences join whenever the cache has room and leave as soon as they finish
// (continuous batching); a step holds one token of every decoding sequence plus prefill
// chunks of new ones, up to a token budget.
//
//   PagedKVCache cache(model.info.config, options, make_policy("dms", policy_options));
//   Engine engine(model, cache);
//   int64_t a = engine.submit(prompt_ids, params, on_text);
//   engine.run();                        // or step() in a loop while !engine.idle()
//   const GenerationResult& r = engine.result(a);
#pragma once
#include <ATen/ATen.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "dms/cache/paged_kv_cache.h"
#include "dms/engine/sampler.h"
#include "dms/engine/stop_strings.h"
#include "dms/model/loader.h"

namespace dms {

struct GenerationParams {
  int64_t max_tokens = 256;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;          // e.g. the checkpoint's EOS ids
  std::vector<std::string> stop_strings;  // matched on the decoded text
  bool record_kept = false;               // note which positions each head kept (kv maps)
  // With the prefix cache: prompt lengths, ascending, at which a prefill chunk ends (so that the
  // cache keeps the prompt's state there), e.g. where the chat messages before the last one end.
  std::vector<int64_t> cache_points;
};

struct GenerationResult {
  bool finished = false;
  std::vector<int32_t> tokens;  // generated ids, stop token included
  std::string text;             // decoded, special tokens and the stop string removed
  std::string stop_reason;      // "stop token", "stop string", "max tokens", "context length", "kv cache full"
  int64_t prompt_tokens = 0;    // tokens prefilled for this request (a reused prefix excluded)
  int64_t cached_tokens = 0;    // prompt tokens taken from the prefix cache instead
  double prompt_seconds = 0;    // from the first prefill step to the first sampled token
  double generation_seconds = 0;
  SequenceStats cache;          // the sequence's cache when it finished
  // With record_kept: positions each (layer, KV head) still held at the end, [layer * n_kv + head].
  std::vector<std::vector<int32_t>> kept_positions;
};

struct EngineOptions {
  int64_t max_step_tokens = 512;  // tokens per forward: bounds prefill chunks and activations
  int64_t max_running = 64;       // sequences holding cache at once
  // The prefix cache: a prompt's state at the end of each prefill chunk and at its end (with the
  // next-token logits), and each finished sequence's whole history, stay in the cache. A request
  // whose tokens start with one of them forks it (PagedKVCache::fork_sequence, copy-on-write per
  // KV head) and prefills only the rest; a prompt seen before samples at once. They are dropped,
  // least recently used first (the longest of equals first), whenever the pools need room, before
  // any running sequence is preempted.
  bool prefix_cache = false;
};

// Totals over the engine's life, for the end-of-run report.
struct EngineStats {
  int64_t steps = 0;
  int64_t tokens_run = 0;          // through the forward: prefill chunks and decoded tokens
  int64_t generated_tokens = 0;
  int64_t preemptions = 0;
  double seconds = 0;              // inside step()
  int64_t peak_bytes_held = 0;     // K and V the cache held, at its largest after a step
  int64_t peak_dense_bytes = 0;    // what a dense cache would have held for the same sequences
  int64_t peak_shared_bytes_saved = 0;  // CacheStats::shared_bytes_saved at its largest
  int64_t prefix_hit_tokens = 0;        // tokens a request did not run because the prefix cache had them
  int64_t prefix_evictions = 0;         // prefix-cache entries dropped to make room
};

class Engine {
 public:
  using TextCallback = std::function<void(int64_t request, const std::string& text)>;

  Engine(const Model& model, PagedKVCache& cache, EngineOptions options = {});
  ~Engine();

  // Queues `prompt` (the whole token history: with the prefix cache, a conversation's next turn
  // prefills only its new tokens). Returns the request id.
  int64_t submit(std::vector<int32_t> prompt, GenerationParams params, TextCallback on_text = {});
  // Queues params.size() samples of one prompt (sample i with params[i], e.g. its own seed): the
  // prompt is prefilled once, then the cache is forked into one sequence per sample, all sharing
  // the prompt's blocks (PagedKVCache::fork_sequence), and each samples its first token from the
  // same logits. Each gives what a request of its own would. Returns the request ids, in order.
  std::vector<int64_t> submit_samples(const std::vector<int32_t>& prompt, const std::vector<GenerationParams>& params,
                                      TextCallback on_text = {});
  bool idle() const;
  // One forward over the scheduled sequences; samples a token for each that is due one.
  void step();
  void run();

  const GenerationResult& result(int64_t request) const;
  // The cache sequence the request holds now; -1 while it waits and once it has finished.
  SequenceId sequence(int64_t request) const;
  // Forgets a finished request's result (a server's engine lives for days; every request it ran
  // must not stay in memory).
  void release(int64_t request);
  // Ends a request now, waiting or running: its blocks go back to the pools and its result says
  // "aborted" (with what it generated so far).
  void abort(int64_t request);
  int64_t running() const { return static_cast<int64_t>(running_.size()); }
  int64_t waiting() const { return static_cast<int64_t>(waiting_.size()); }
  const EngineStats& stats() const { return stats_; }
  int64_t prefix_entries() const { return static_cast<int64_t>(prefixes_.size()); }
  // Blocks (all pools) only prefix-cache entries hold: what clear_prefix_cache would free. It
  // walks the entries' block tables.
  int64_t prefix_blocks() const;
  // Drops every prefix-cache entry (their blocks go back to the pools unless a sequence shares them).
  void clear_prefix_cache();
  const PagedKVCache& cache() const { return cache_; }

 private:
  struct Request;
  struct Prefix;
  using Clock = std::chrono::steady_clock;

  // A running request's tokens in the next step.
  struct Share {
    Request* request;
    int64_t n;
  };

  Request& get(int64_t id) const;
  Request& add_request(std::vector<int32_t> prompt, GenerationParams params, TextCallback on_text);
  // After the leader's prefill: its waiting samples become forks of its sequence and sample
  // from the same logits.
  void fork_samples(Request& leader, const at::Tensor& logits);
  // A leader that ends before its prefill did hands its waiting samples to the first of them.
  void hand_over_samples(Request& leader);
  // The next step: its sequences (the forward's row order), their tokens, and the requests in
  // the same order.
  std::vector<Request*> schedule(std::vector<StepSequence>& step, std::vector<int32_t>& ids);
  // The steps of schedule, in order.
  void admit_waiting();
  bool has_room_for(int64_t pending) const;  // the tokens a waiting request would run
  void share_token_budget(std::vector<Share>& shares) const;
  void fit_in_memory(std::vector<Share>& shares, std::vector<StepSequence>& step);
  void give_way(std::vector<Share>& shares);
  void fill_step(const std::vector<Share>& shares, std::vector<StepSequence>& step) const;
  void preempt(Request& r);
  // The prefix cache. prefix_at: the entry of exactly tokens[0, n), whose hash is `h`, or null.
  // find_prefix: the longest entry `tokens` starts with that leaves a token to run (or has the
  // logits to sample from), null if none; it and its shorter prefixes count as used at `stamp`.
  // keep_prefix: makes `seq`'s state the entry of tokens[0, n) unless that entry exists, taking
  // `seq` over when `owned` (else forking it only when needed). drop_prefix: the least recently
  // used, false when there is none.
  Prefix* prefix_at(uint64_t h, const std::vector<int32_t>& tokens, size_t n) const;
  Prefix* find_prefix(const std::vector<int32_t>& tokens, int64_t stamp);
  void keep_prefix(const std::vector<int32_t>& tokens, int64_t n, SequenceId seq, bool owned, at::Tensor logits,
                   int64_t stamp);
  bool drop_prefix();
  void sample(Request& r, const at::Tensor& logits);
  void finish(Request& r, const std::string& reason);

  const Model& model_;
  PagedKVCache& cache_;
  EngineOptions options_;
  std::vector<std::unique_ptr<Request>> requests_;  // indexed by id; null once released
  std::vector<Request*> waiting_;                   // not yet in the cache, in arrival order
  std::vector<Request*> running_;                   // in the cache, in admission order
  EngineStats stats_;
  std::vector<std::unique_ptr<Prefix>> prefixes_;
  std::unordered_multimap<uint64_t, Prefix*> prefix_index_;  // by hash of the tokens
  at::Tensor logits_kept_;  // step()'s logits, kept for the next step
  int64_t prefix_clock_ = 0;
};

}  // namespace dms
