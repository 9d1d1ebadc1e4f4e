// Eviction policies: which keys each (sequence, layer, KV head) keeps. One interface, one
// small file per policy (policy_*.cpp); PagedKVCache calls them for every head of a step.
//
//   dms        learned delayed eviction (dms-spec sections 1-2): the decision logit of token
//              j+1 flags key j, which then stays visible to `window` more queries.
//   dense      keeps every key (the reference the others are measured against).
//   streaming  the first `sinks` keys and the most recent ones (StreamingLLM).
//   h2o        the most recent keys plus the heavy hitters by accumulated attention (H2O).
//   tova       drops the keys the newest query attends to least, per KV head (TOVA).
//
// The baselines hold a budget (Budget) that they meet after every step, prefill chunks
// included; during a step every query sees the whole chunk and all the kept keys.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dms/cache/head_cache.h"

namespace dms {

// What a policy sees of one (sequence, layer, KV head) in one step.
struct HeadStep {
  const HeadCache& head;   // the keys kept from earlier steps
  int64_t layer = 0;
  int64_t kv_head = 0;
  int64_t first_pos = 0;   // the step's tokens are at first_pos .. first_pos + n_new - 1
  int64_t n_new = 0;
  // Decision logits l[t] of this head for the step's tokens at logits[t * logit_stride];
  // nullptr when the model has no decision heads.
  const float* logits = nullptr;
  int64_t logit_stride = 1;
};

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;
  virtual std::string name() const = 0;
  // Whether after_attention reads the attention mass (the cache then has the kernel report it).
  virtual bool needs_attention_mass() const { return false; }
  // Before the layer's attention: what this step's queries may see (DMS sets evict_at).
  // `d` arrives with newest_evict_at = the newest key's current evict_at, step_evict_at all
  // kNever and drop_step all 0. Called concurrently for different heads.
  virtual void before_attention(const HeadStep& step, HeadDecision& d) const {}
  // After it: which keys to drop so the head stays within budget once the step is stored.
  virtual void after_attention(const HeadStep& step, HeadDecision& d) const {}
  // Whether after_attention does anything (the cache skips the call, and its threads, when not).
  virtual bool acts_after_attention() const { return false; }
  // An upper bound on the keys the head holds after a step of n_new tokens, whatever the
  // decisions turn out to be: PagedKVCache refuses a step the pools could not hold.
  virtual int64_t max_live_after(const HeadCache& head, int64_t first_pos, int64_t n_new) const = 0;
  // An upper bound on the keys stored before the step that the step frees (expired or dropped):
  // a forked sequence copies the shared blocks it frees slots in (HeadCache::max_copies).
  virtual int64_t max_freed(const HeadCache& head, int64_t first_pos, int64_t n_new) const { return head.live(); }
};

// How many keys a budget policy keeps per head after `seen` tokens: a fixed `tokens` count,
// or ceil(seen / compression_ratio) but at least min_tokens.
struct Budget {
  double compression_ratio = 0;  // > 1 to use it
  int64_t tokens = 0;            // > 0 to use it (exactly one of the two)
  int64_t min_tokens = 64;
  int64_t limit(int64_t seen) const;
  // Throws Error naming the policy when the budget is unset, both are set, or it cannot hold
  // `protect` keys that the policy never evicts.
  void validate(const std::string& policy, int64_t protect) const;
};

struct DmsPolicyOptions {
  int64_t window = 512;  // dms_window_size: a flagged key stays visible to this many more queries
  // In [0, 1]: flag each key with this probability (seeded by seed, layer, head and position,
  // so a forked or preempted sequence decides as before) instead of reading the decision
  // logits, to benchmark models without decision heads. Negative: read the logits.
  double forced_fraction = -1;
  uint64_t seed = 0;
};

struct StreamingPolicyOptions {
  Budget budget;
  int64_t sinks = 4;  // the first keys, kept forever
};

struct H2OPolicyOptions {
  Budget budget;
  double recent_share = 0.5;  // share of the budget kept for the most recent keys
};

struct TovaPolicyOptions {
  Budget budget;
};

std::unique_ptr<EvictionPolicy> make_dense_policy();
std::unique_ptr<EvictionPolicy> make_dms_policy(const DmsPolicyOptions& options);
std::unique_ptr<EvictionPolicy> make_streaming_policy(const StreamingPolicyOptions& options);
std::unique_ptr<EvictionPolicy> make_h2o_policy(const H2OPolicyOptions& options);
std::unique_ptr<EvictionPolicy> make_tova_policy(const TovaPolicyOptions& options);

// Every policy's settings, for choosing one by name ("dms", "dense", "streaming", "h2o",
// "tova"), as the command line does. Throws Error for an unknown name or bad settings.
struct PolicyOptions {
  DmsPolicyOptions dms;
  Budget budget;
  int64_t sinks = 4;
  double recent_share = 0.5;
};
std::unique_ptr<EvictionPolicy> make_policy(const std::string& name, const PolicyOptions& options);

// The registry of names make_policy knows: every policy, and the budget policies among them
// (the training-free baselines that drop keys to meet a budget), in the order help texts list them.
const std::vector<std::string>& policy_names();
const std::vector<std::string>& budget_policy_names();
bool is_budget_policy(const std::string& name);
// "a, b, c": names for help texts and errors.
std::string joined(const std::vector<std::string>& names);

}  // namespace dms
