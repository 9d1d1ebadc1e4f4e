#include "dms/eval/task_sweep.h"

#include <algorithm>
#include <memory>

#include "dms/cache/cache_sizing.h"
#include "dms/engine/engine.h"
#include "dms/kernels/cpu/kv_quant.h"
#include "dms/util/error.h"

namespace dms::eval {
namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// What a run of one problem's samples records while the engine steps.
struct Active {
  size_t index = 0;               // in the problems
  std::vector<int64_t> requests;  // sample i's request
  // [sample][t - 1]: K/V slots the decode step that produced token t read (0 for the first
  // token, which comes from the prompt's prefill).
  std::vector<std::vector<int64_t>> read_slots;
  // After each engine step, per limit and k index: the bytes of the blocks the first k samples held
  // together, leaving out those that had reached the limit.
  std::vector<std::vector<std::vector<int64_t>>> held;
};

class Sweep {
 public:
  Sweep(const Model& model, const PolicyUnderTest& policy, const std::vector<TaskProblem>& problems,
        const TaskSweepOptions& o)
      : model_(model), c_(model.info.config), problems_(problems), o_(o) {
    if (o.samples.empty() || o.limits.empty()) fail("dms solve", "need at least one sample count and one limit");
    if (!std::is_sorted(o.samples.begin(), o.samples.end()) || o.samples.front() < 1)
      fail("dms solve", "sample counts must be ascending and at least 1");
    if (!std::is_sorted(o.limits.begin(), o.limits.end()) || o.limits.front() < 1)
      fail("dms solve", "token limits must be ascending and at least 1");
    if (o.problems_at_once < 1) fail("dms solve", "problems at once must be at least 1");
    kmax_ = o.samples.back();
    lmax_ = o.limits.back();
    int64_t longest = 0;
    for (const auto& p : problems) {
      prompts_.push_back(task_prompt(model, p, o.system));
      longest = std::max<int64_t>(longest, static_cast<int64_t>(prompts_.back().size()));
    }
    if (longest + lmax_ > c_.max_position)
      fail("dms solve", "a prompt of " + std::to_string(longest) + " tokens and " + std::to_string(lmax_) +
                            " generated ones exceed the model's context of " + std::to_string(c_.max_position));
    // Room for every running sample kept dense: the engine never preempts, so samples stay in step.
    const int64_t sequences = o.problems_at_once * kmax_;
    cache_ = std::make_unique<PagedKVCache>(
        c_, dense_cache_options(c_, o.engine.kv_dtype, o.engine.block_size, sequences, longest + lmax_),
        make_policy(policy.policy, policy.options));
    engine_ = std::make_unique<Engine>(model, *cache_, EngineOptions{o.engine.step_tokens, sequences});
    slot_bytes_ = 2 * cpu::kv_row_bytes(o.engine.kv_dtype, c_.head_dim);
    for (int64_t l = 0; l < c_.n_layers; ++l) marks_.emplace_back(cache_->pool(l).num_blocks(), -1);
    policy_ = policy.label;
    if (is_budget_policy(policy.policy)) budget_ratio_ = policy.options.budget.compression_ratio;
  }

  std::vector<ProblemRun> run(const std::function<void(const ProblemRun&)>& on_done) {
    std::vector<ProblemRun> out(problems_.size());
    std::vector<Active> active;
    size_t next = 0;
    while (next < problems_.size() || !active.empty()) {
      while (next < problems_.size() && static_cast<int64_t>(active.size()) < o_.problems_at_once)
        active.push_back(submit(next++));
      std::vector<std::vector<int64_t>> before(active.size());
      for (size_t a = 0; a < active.size(); ++a)
        for (int64_t r : active[a].requests) before[a].push_back(slots_read_next(r));
      engine_->step();
      for (size_t a = 0; a < active.size(); ++a) observe(active[a], before[a]);
      for (size_t a = 0; a < active.size();) {
        if (!done(active[a])) {
          ++a;
          continue;
        }
        out[active[a].index] = finish(active[a]);
        if (on_done) on_done(out[active[a].index]);
        active.erase(active.begin() + static_cast<std::ptrdiff_t>(a));
      }
    }
    if (engine_->stats().preemptions > 0) fail("dms solve", "the engine preempted a sample (cache too small)");
    return out;
  }

 private:
  Active submit(size_t index) {
    const TaskProblem& p = problems_[index];
    std::vector<GenerationParams> params(kmax_);
    for (int64_t i = 0; i < kmax_; ++i) {
      params[i].max_tokens = lmax_;
      params[i].sampling = o_.sampling;
      params[i].sampling.seed = sample_seed(o_.sampling.seed, p.id, i);
      params[i].stop_ids = o_.stop_ids;
    }
    Active a;
    a.index = index;
    a.requests = engine_->submit_samples(prompts_[index], params);
    a.read_slots.resize(kmax_);
    return a;
  }

  // The K/V slots request r's next decode step reads (its live keys in every layer and KV head,
  // and the one it adds), or -1 if it does not decode next (waiting, prefilling, or finished).
  int64_t slots_read_next(int64_t r) const {
    const SequenceId seq = engine_->sequence(r);
    if (seq < 0 || engine_->result(r).tokens.empty()) return -1;
    int64_t live = 0;
    for (int64_t l = 0; l < c_.n_layers; ++l)
      for (int64_t g = 0; g < c_.n_kv_heads; ++g) live += cache_->head(seq, l, g).live() + 1;
    return live;
  }

  void observe(Active& a, const std::vector<int64_t>& before) {
    std::vector<int64_t> tokens(kmax_, 0);
    for (int64_t i = 0; i < kmax_; ++i) {
      const int64_t r = a.requests[i];
      tokens[i] = static_cast<int64_t>(engine_->result(r).tokens.size());
      auto& reads = a.read_slots[i];
      if (static_cast<int64_t>(reads.size()) < tokens[i]) {
        if (tokens[i] - static_cast<int64_t>(reads.size()) != 1 || (before[i] < 0 && !reads.empty()))
          fail("dms solve", "a sample did not decode one token per step");
        reads.push_back(reads.empty() ? 0 : before[i]);
      }
    }
    // Per limit: a sample that has reached it would have ended in this step, giving its blocks back.
    std::vector<std::vector<int64_t>> held;
    for (int64_t limit : o_.limits) {
      std::vector<int64_t> first_held(kmax_, 0);
      ++stamp_;
      for (int64_t i = 0; i < kmax_; ++i) {
        const SequenceId seq = engine_->sequence(a.requests[i]);
        if (seq < 0 || tokens[i] >= limit) continue;
        for (int64_t l = 0; l < c_.n_layers; ++l) {
          auto& mark = marks_[l];
          const int64_t bytes = cache_->pool(l).block_bytes();
          for (int64_t g = 0; g < c_.n_kv_heads; ++g)
            for (int32_t b : cache_->head(seq, l, g).blocks())
              if (mark[b] != stamp_) {  // a block counts for the first sample that holds it
                mark[b] = stamp_;
                first_held[i] += bytes;
              }
        }
      }
      std::vector<int64_t> by_k;
      int64_t i = 0, bytes = 0;
      for (int64_t k : o_.samples) {
        for (; i < k; ++i) bytes += first_held[i];
        by_k.push_back(bytes);
      }
      held.push_back(std::move(by_k));
    }
    a.held.push_back(std::move(held));
  }

  bool done(const Active& a) const {
    return std::all_of(a.requests.begin(), a.requests.end(), [&](int64_t r) { return engine_->result(r).finished; });
  }

  ProblemRun finish(const Active& a) {
    const TaskProblem& p = problems_[a.index];
    ProblemRun run;
    run.id = p.id;
    run.policy = policy_;
    run.budget_ratio = budget_ratio_;
    run.prompt_tokens = static_cast<int64_t>(prompts_[a.index].size());
    const int64_t heads = c_.n_layers * c_.n_kv_heads;
    for (int64_t r : a.requests) {
      const GenerationResult& g = engine_->result(r);
      run.generated.push_back(static_cast<int64_t>(g.tokens.size()));
      run.seen.push_back(g.cache.tokens_seen);
      run.dense_keys.push_back(g.cache.tokens_seen * heads);
      run.keys_held.push_back(g.cache.live_slots);
    }
    for (size_t l = 0; l < o_.limits.size(); ++l) {
      const int64_t limit = o_.limits[l];
      std::vector<std::string> answers;
      for (int64_t r : a.requests) {
        const auto& tokens = engine_->result(r).tokens;
        const auto n = std::min<int64_t>(limit, static_cast<int64_t>(tokens.size()));
        answers.push_back(extract_answer(model_.tokenizer->decode({tokens.data(), static_cast<size_t>(n)}, true), p));
      }
      run.answers.push_back(std::move(answers));
      std::vector<int64_t> peak, read;
      for (size_t j = 0; j < o_.samples.size(); ++j) {
        int64_t most = 0;
        for (const auto& step : a.held) most = std::max(most, step[l][j]);
        int64_t slots = 0;
        for (int64_t i = 0; i < o_.samples[j]; ++i) {
          const auto& reads = a.read_slots[i];
          for (int64_t t = 0; t < std::min<int64_t>(limit, static_cast<int64_t>(reads.size())); ++t) slots += reads[t];
        }
        peak.push_back(most);
        read.push_back(slots * slot_bytes_);
      }
      run.peak_bytes.push_back(std::move(peak));
      run.read_bytes.push_back(std::move(read));
    }
    for (int64_t r : a.requests) engine_->release(r);
    return run;
  }

  const Model& model_;
  const ModelConfig& c_;
  const std::vector<TaskProblem>& problems_;
  const TaskSweepOptions& o_;
  std::vector<std::vector<int32_t>> prompts_;
  int64_t kmax_ = 0, lmax_ = 0, slot_bytes_ = 0, stamp_ = 0;
  std::unique_ptr<PagedKVCache> cache_;
  std::unique_ptr<Engine> engine_;
  std::vector<std::vector<int64_t>> marks_;  // per layer and block: the last observation that counted it
  std::string policy_;
  double budget_ratio_ = 0;
};

}  // namespace

uint64_t sample_seed(uint64_t base, const std::string& id, int64_t i) {
  return fnv1a(id + "/" + std::to_string(i)) ^ (base * 0x9E3779B97F4A7C15ull);
}

std::vector<int32_t> task_prompt(const Model& model, const TaskProblem& p, const std::string& system) {
  std::vector<ChatMessage> messages;
  if (!system.empty()) messages.push_back({"system", system});
  messages.push_back({"user", p.question});
  // The rendered template carries its own BOS text where the family has one.
  return model.tokenizer->encode(model.chat_template.render(messages, true), false);
}

std::vector<ProblemRun> run_task_sweep(const Model& model, const PolicyUnderTest& policy,
                                       const std::vector<TaskProblem>& problems, const TaskSweepOptions& options,
                                       const std::function<void(const ProblemRun&)>& on_done) {
  Sweep sweep(model, policy, problems, options);
  return sweep.run(on_done);
}

}  // namespace dms::eval
