// Every eviction policy through the same checks (as kvpress does): after every step, prefill
// chunks included, no head holds more keys than its budget, no key of the policy's protected
// region is gone, the attention output equals plain attention over exactly the keys the cache
// says it kept plus the step's own (double-precision reference, tolerance as in
// test_paged_cache.cpp), and dense keeps everything. Then each policy's choice against a
// re-derivation in the test: StreamingLLM's sinks + recent set, TOVA's lowest weights of the
// last query and H2O's heavy hitters, both from attention weights the test computes itself
// with a plain softmax; DMS's forced flags are seeded per key, whatever the batching. A toy
// score through the BudgetPolicy base shows the base does the rest for any score.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>

#include "dms/cache/budget_policy.h"
#include "paged_cache_reference.h"

namespace dms::test {
namespace {

constexpr double kTolerance = 2e-5;
// A re-derived choice is compared only where the weights at its boundary differ by more than
// this (relative): the cache's fp32 weights and the test's double ones may order a closer pair
// either way.
constexpr double kTieGap = 1e-4;

// Runs random steps through a cache with `policy` and, per (sequence, layer, KV head), the
// test's own attention over the keys the cache reported before the step plus the step's keys.
class PolicyDriver {
 public:
  PolicyDriver(const ModelConfig& shape, int64_t block_size, std::unique_ptr<EvictionPolicy> policy, uint64_t seed,
               at::ScalarType kv_dtype = at::kFloat)
      : shape_(shape), kv_dtype_(kv_dtype), cache_(shape, {kv_dtype, block_size, 4096}, std::move(policy)) {
    at::manual_seed(seed);
  }

  SequenceId add() {
    const SequenceId id = cache_.add_sequence();
    for (int64_t l = 0; l < shape_.n_layers; ++l) {
      keys_[{id, l}] = at::empty({0, shape_.n_kv_heads, shape_.head_dim}, at::kDouble);
      values_[{id, l}] = at::empty({0, shape_.n_kv_heads, shape_.head_dim}, at::kDouble);
    }
    return id;
  }

  // One step; returns the worst relative error over the rows it can check. DMS hides keys
  // flagged inside a prefill chunk from that chunk's later queries, which this reference does
  // not model, so for it only decode rows are compared (test_paged_cache.cpp covers the rest).
  double step(const std::vector<StepSequence>& step) {
    std::map<std::tuple<SequenceId, int64_t, int64_t>, std::vector<int32_t>> before;
    for (const auto& s : step)
      for (int64_t l = 0; l < shape_.n_layers; ++l)
        for (int64_t g = 0; g < shape_.n_kv_heads; ++g) before[{s.id, l, g}] = cache_.live_positions(s.id, l, g);
    cache_.begin_step(step);
    const int64_t T = cache_.step_rows(), nq = shape_.n_heads, n_kv = shape_.n_kv_heads, D = shape_.head_dim;
    const int64_t G = nq / n_kv;
    double worst = 0;
    for (int64_t l = 0; l < shape_.n_layers; ++l) {
      const auto q = 2 * at::randn({T, nq, D}), k = at::randn({T, n_kv, D}), v = at::randn({T, n_kv, D});
      const at::Tensor out = cache_.attend(l, q, k, v, at::Tensor());
      int64_t row = 0;
      for (const auto& s : step) {
        at::Tensor& hk = keys_[{s.id, l}];
        at::Tensor& hv = values_[{s.id, l}];
        hk = at::cat({hk, stored_values(k.narrow(0, row, s.n_tokens), kv_dtype_)});
        hv = at::cat({hv, stored_values(v.narrow(0, row, s.n_tokens), kv_dtype_)});
        const int64_t first = hk.size(0) - s.n_tokens;
        for (int64_t g = 0; g < n_kv; ++g) {
          std::vector<int64_t> pos(before[{s.id, l, g}].begin(), before[{s.id, l, g}].end());
          for (int64_t t = 0; t < s.n_tokens; ++t) pos.push_back(first + t);
          const auto index = at::tensor(pos, at::kLong);
          const auto kk = hk.select(1, g).index_select(0, index), vv = hv.select(1, g).index_select(0, index);
          const auto qq = q.narrow(0, row, s.n_tokens).narrow(1, g * G, G).to(at::kDouble);  // [T, G, D]
          auto scores = at::matmul(qq, kk.t()) / std::sqrt(static_cast<double>(D));       // [T, G, S]
          const auto qpos = at::arange(first, first + s.n_tokens, at::kLong).view({-1, 1, 1});
          scores = scores.masked_fill(index.view({1, 1, -1}) > qpos, -INFINITY);
          const auto weights = at::softmax(scores, -1);
          const auto ref = at::matmul(weights, vv);
          if (cache_.policy().name() != "dms" || s.n_tokens == 1)
            worst = std::max(worst, relative_error(out.narrow(0, row, s.n_tokens).narrow(1, g * G, G), ref));
          auto& acc = accumulated_[{s.id, l, g}];
          const auto per_key = weights.sum({0, 1});
          const auto last = weights.select(0, s.n_tokens - 1).sum(0);
          auto& lw = last_weights_[{s.id, l, g}];
          lw.clear();
          for (size_t j = 0; j < pos.size(); ++j) {
            acc[pos[j]] += per_key[j].item<double>();
            lw[pos[j]] = last[j].item<double>();
          }
        }
        row += s.n_tokens;
      }
    }
    cache_.end_step();
    // Forget the accumulated attention of evicted keys, as H2O does.
    for (const auto& s : step)
      for (int64_t l = 0; l < shape_.n_layers; ++l)
        for (int64_t g = 0; g < shape_.n_kv_heads; ++g) {
          auto& acc = accumulated_[{s.id, l, g}];
          before_eviction_[{s.id, l, g}] = acc;
          std::map<int32_t, double> kept;
          for (int32_t p : cache_.live_positions(s.id, l, g)) kept[p] = acc[p];
          acc = std::move(kept);
        }
    worst_ = std::max(worst_, worst);
    return worst;
  }

  PagedKVCache& cache() { return cache_; }
  // By position, for the last step's candidates (the keys kept before it and its own): the
  // attention each has received since it was stored, summed over queries and the group's
  // heads, and the weights of the step's last query, summed over the group's heads.
  const std::map<int32_t, double>& accumulated(SequenceId id, int64_t l, int64_t g) {
    return before_eviction_[{id, l, g}];
  }
  const std::map<int32_t, double>& last_weights(SequenceId id, int64_t l, int64_t g) {
    return last_weights_[{id, l, g}];
  }
  double worst_error() const { return worst_; }

 private:
  ModelConfig shape_;
  at::ScalarType kv_dtype_;
  PagedKVCache cache_;
  std::map<std::pair<SequenceId, int64_t>, at::Tensor> keys_, values_;
  std::map<std::tuple<SequenceId, int64_t, int64_t>, std::map<int32_t, double>> accumulated_, before_eviction_,
      last_weights_;
  double worst_ = 0;
};

// A toy score through the BudgetPolicy base, which supplies the budget, the candidates and
// the drop: the oldest keys stay, and the newest, which it protects. It counts how often the
// base asks for scores.
class OldestKeysPolicy : public BudgetPolicy {
 public:
  explicit OldestKeysPolicy(const Budget& budget, int64_t protect = 1) : BudgetPolicy("oldest", budget, protect) {}
  int64_t score_calls() const { return calls_; }

 protected:
  void score(const HeadStep& step, const HeadDecision&, int64_t, std::vector<Candidate>& c) const override {
    ++calls_;
    const int64_t newest = step.first_pos + step.n_new - 1;
    for (auto& k : c) k.score = k.pos == newest ? kProtected : -static_cast<double>(k.pos);
  }

 private:
  mutable std::atomic<int64_t> calls_{0};
};

struct PolicyCase {
  std::string name;
  std::function<std::unique_ptr<EvictionPolicy>()> make;
  std::function<int64_t(int64_t seen)> budget;               // most keys a head may hold
  std::function<bool(int64_t pos, int64_t seen)> protects;   // keys that must still be there
};

Budget ratio_budget(double cr, int64_t min_tokens) {
  Budget b;
  b.compression_ratio = cr;
  b.min_tokens = min_tokens;
  return b;
}

Budget token_budget(int64_t tokens) {
  Budget b;
  b.tokens = tokens;
  return b;
}

std::vector<PolicyCase> policy_cases() {
  const int64_t window = 6, sinks = 3;
  const Budget by_ratio = ratio_budget(4.0, 12), by_tokens = token_budget(20);
  auto limit = [](const Budget& b) { return [b](int64_t seen) { return b.limit(seen); }; };
  return {
      {"dense", [] { return make_dense_policy(); }, [](int64_t seen) { return seen; },
       [](int64_t, int64_t) { return true; }},
      {"dms (forced 0.75)",
       [=] { return make_dms_policy({.window = window, .forced_fraction = 0.75, .seed = 5}); },
       [](int64_t seen) { return seen; },
       [=](int64_t pos, int64_t seen) { return pos >= seen - window; }},
      {"streaming (ratio)", [=] { return make_streaming_policy({by_ratio, sinks}); }, limit(by_ratio),
       [=](int64_t pos, int64_t seen) { return pos < sinks || pos >= seen - (by_ratio.limit(seen) - sinks); }},
      {"streaming (tokens)", [=] { return make_streaming_policy({by_tokens, sinks}); }, limit(by_tokens),
       [=](int64_t pos, int64_t seen) { return pos < sinks || pos >= seen - (by_tokens.limit(seen) - sinks); }},
      {"h2o (ratio)", [=] { return make_h2o_policy({by_ratio, 0.5}); }, limit(by_ratio),
       [=](int64_t pos, int64_t seen) {
         return pos >= seen - static_cast<int64_t>(std::floor(by_ratio.limit(seen) * 0.5));
       }},
      {"h2o (tokens)", [=] { return make_h2o_policy({by_tokens, 0.25}); }, limit(by_tokens),
       [=](int64_t pos, int64_t seen) {
         return pos >= seen - static_cast<int64_t>(std::floor(by_tokens.limit(seen) * 0.25));
       }},
      {"tova (ratio)", [=] { return make_tova_policy({by_ratio}); }, limit(by_ratio),
       [](int64_t pos, int64_t seen) { return pos == seen - 1; }},
      {"tova (tokens)", [=] { return make_tova_policy({by_tokens}); }, limit(by_tokens),
       [](int64_t pos, int64_t seen) { return pos == seen - 1; }},
      {"toy budget policy (ratio)", [=] { return std::make_unique<OldestKeysPolicy>(by_ratio); }, limit(by_ratio),
       [=](int64_t pos, int64_t seen) { return pos == seen - 1 || pos < by_ratio.min_tokens - 1; }},
      {"toy budget policy (tokens)", [=] { return std::make_unique<OldestKeysPolicy>(by_tokens); }, limit(by_tokens),
       [=](int64_t pos, int64_t seen) { return pos == seen - 1 || pos < by_tokens.tokens - 1; }},
  };
}

// With q8 KV (at::kChar) the reference attends over the values the cache stored (stored_values).
void check_every_policy(at::ScalarType kv_dtype) {
  for (const PolicyCase& pc : policy_cases()) {
    SCOPED_TRACE(pc.name + ", KV " + c10::toString(kv_dtype));
    const int64_t block = 5;
    PolicyDriver d(attention_config(2, 2, 2, 16), block, pc.make(), 41, kv_dtype);
    std::mt19937_64 rng(43);
    const SequenceId a = d.add(), b = d.add();
    std::map<SequenceId, int64_t> prompt{{a, 150}, {b, 7}};
    for (int s = 0; s < 60; ++s) {
      std::vector<StepSequence> step;
      for (auto& [id, left] : prompt) {
        const int64_t n = left > 0 ? std::min<int64_t>(left, 1 + static_cast<int64_t>(rng() % 40)) : 1;
        left -= std::min(left, n);
        step.push_back({id, n});
      }
      ASSERT_LE(d.step(step), kTolerance) << "step " << s;
      for (SequenceId id : {a, b}) {
        const int64_t seen = d.cache().tokens_seen(id);
        for (int64_t l = 0; l < 2; ++l)
          for (int64_t g = 0; g < 2; ++g) {
            const auto live = d.cache().live_positions(id, l, g);
            ASSERT_LE(static_cast<int64_t>(live.size()), pc.budget(seen)) << "seen " << seen;
            const std::set<int32_t> kept(live.begin(), live.end());
            ASSERT_EQ(kept.size(), live.size());
            ASSERT_TRUE(live.empty() || (live.front() >= 0 && live.back() < seen));
            for (int64_t p = 0; p < seen; ++p)
              if (pc.protects(p, seen)) {
                ASSERT_TRUE(kept.count(static_cast<int32_t>(p))) << "protected key " << p;
              }
            ASSERT_EQ(static_cast<int64_t>(d.cache().head(id, l, g).blocks().size()),
                      (static_cast<int64_t>(live.size()) + block - 1) / block);
          }
      }
    }
    if (pc.name == "dense") {
      for (SequenceId id : {a, b}) EXPECT_EQ(d.cache().sequence_stats(id).live_slots, 4 * d.cache().tokens_seen(id));
      EXPECT_EQ(d.cache().stats().eviction_fraction, 0.0);
    } else {
      EXPECT_GT(d.cache().stats().eviction_fraction, 0.3) << "the schedule must make the policy evict";
    }
  }
}

TEST(Policies, EveryPolicyKeepsItsBudgetAndProtectedKeysAndAttendsExactlyWhatItKept) { check_every_policy(at::kFloat); }

TEST(Policies, EveryPolicyWithQ8KeysAttendsExactlyWhatItKept) { check_every_policy(at::kChar); }

TEST(Policies, BudgetGrowsWithTokensSeen) {
  const Budget b = ratio_budget(3.0, 10);
  for (int64_t seen : {0, 1, 29, 30, 31, 32, 33, 100, 1000})
    EXPECT_EQ(b.limit(seen), std::max<int64_t>(10, (seen + 2) / 3)) << seen;
  EXPECT_EQ(token_budget(7).limit(1000), 7);
}

TEST(Policies, StreamingKeepsSinksAndTheMostRecent) {
  const Budget budget = ratio_budget(2.0, 8);
  PolicyDriver d(attention_config(1, 2, 2, 16), 4, make_streaming_policy({budget, 2}), 45);
  const SequenceId id = d.add();
  for (int64_t n : {5, 9, 20, 1, 1, 1, 33, 1, 1}) {
    ASSERT_LE(d.step({{id, n}}), kTolerance);
    const int64_t seen = d.cache().tokens_seen(id), keep = std::min(seen, budget.limit(seen));
    std::vector<int32_t> expected;
    for (int64_t p = 0; p < seen; ++p)
      if (p < 2 || p >= seen - (keep - 2)) expected.push_back(static_cast<int32_t>(p));
    for (int64_t g = 0; g < 2; ++g) EXPECT_EQ(d.cache().live_positions(id, 0, g), expected) << "seen " << seen;
  }
}

// The keys with the lowest `score` go, except `protect`ed ones; nullopt when the boundary
// between kept and dropped is closer than kTieGap.
std::optional<std::vector<int32_t>> keep_highest(const std::map<int32_t, double>& score, int64_t keep,
                                                 const std::function<bool(int32_t)>& protect) {
  std::vector<std::pair<double, int32_t>> ranked;
  std::vector<int32_t> kept;
  for (const auto& [p, s] : score) {
    if (protect(p))
      kept.push_back(p);
    else
      ranked.push_back({s, p});
  }
  std::sort(ranked.rbegin(), ranked.rend());
  const int64_t extra = keep - static_cast<int64_t>(kept.size());
  if (extra < static_cast<int64_t>(ranked.size()) && extra > 0) {
    const double a = ranked[extra - 1].first, b = ranked[extra].first;
    if (a - b <= kTieGap * std::max(std::abs(a), 1e-3)) return std::nullopt;
  }
  for (int64_t i = 0; i < extra && i < static_cast<int64_t>(ranked.size()); ++i) kept.push_back(ranked[i].second);
  std::sort(kept.begin(), kept.end());
  return kept;
}

TEST(Policies, TovaDropsTheLowestWeightsOfTheLastQuery) {
  const Budget budget = token_budget(10);
  PolicyDriver d(attention_config(1, 2, 3, 16), 4, make_tova_policy({budget}), 47);
  const SequenceId id = d.add();
  int compared = 0;
  std::map<int64_t, std::vector<int32_t>> previous;
  for (int64_t n : {6, 7, 1, 1, 1, 1, 18, 1, 1, 1, 1, 1, 25, 1, 1, 1, 1, 1, 1, 1, 1}) {
    ASSERT_LE(d.step({{id, n}}), kTolerance);
    const int64_t seen = d.cache().tokens_seen(id);
    for (int64_t g = 0; g < 2; ++g) {
      const auto expected = keep_highest(d.last_weights(id, 0, g), budget.limit(seen),
                                         [&](int32_t p) { return p == seen - 1; });
      if (!expected) continue;
      EXPECT_EQ(d.cache().live_positions(id, 0, g), *expected) << "seen " << seen << " head " << g;
      ++compared;
    }
  }
  EXPECT_GE(compared, 36) << "too many near-ties to check TOVA's choice";
}

TEST(Policies, H2OKeepsTheRecentAndTheHeavyHitters) {
  const Budget budget = ratio_budget(3.0, 9);
  PolicyDriver d(attention_config(1, 2, 2, 16), 4, make_h2o_policy({budget, 0.4}), 49);
  const SequenceId id = d.add();
  int compared = 0;
  for (int64_t n : {5, 6, 1, 1, 1, 20, 1, 1, 1, 1, 17, 1, 1, 1, 1, 1, 1, 40, 1, 1, 1, 1, 1}) {
    ASSERT_LE(d.step({{id, n}}), kTolerance);
    const int64_t seen = d.cache().tokens_seen(id), keep = budget.limit(seen);
    const int64_t recent = static_cast<int64_t>(std::floor(keep * 0.4));
    for (int64_t g = 0; g < 2; ++g) {
      const auto expected =
          keep_highest(d.accumulated(id, 0, g), keep, [&](int32_t p) { return p >= seen - recent; });
      if (!expected) continue;
      EXPECT_EQ(d.cache().live_positions(id, 0, g), *expected) << "seen " << seen << " head " << g;
      ++compared;
    }
  }
  EXPECT_GE(compared, 40) << "too many near-ties to check H2O's choice";
}

// The base scores only a head over its budget, keeps exactly the highest-scored keys and the
// protected one, bounds what a step may leave for the cache's admission check, and validates the
// budget against what the policy protects, naming it.
TEST(Policies, BudgetPolicyBaseRunsAnyScore) {
  const Budget budget = token_budget(10);
  auto owned = std::make_unique<OldestKeysPolicy>(budget);
  const OldestKeysPolicy& toy = *owned;
  EXPECT_EQ(toy.name(), "oldest");
  EXPECT_EQ(toy.max_live_after(HeadCache(4), 0, 6), 6);
  EXPECT_EQ(toy.max_live_after(HeadCache(4), 0, 30), 10);
  PolicyDriver d(attention_config(1, 2, 2, 16), 4, std::move(owned), 53);
  const SequenceId id = d.add();
  for (int64_t n : {4, 6}) ASSERT_LE(d.step({{id, n}}), kTolerance);
  EXPECT_EQ(toy.score_calls(), 0) << "within budget: nothing to score";
  for (int64_t n : {1, 17, 1, 1, 9, 1}) {
    ASSERT_LE(d.step({{id, n}}), kTolerance);
    const int64_t seen = d.cache().tokens_seen(id);
    const std::vector<int32_t> expected{0, 1, 2, 3, 4, 5, 6, 7, 8, static_cast<int32_t>(seen - 1)};
    for (int64_t g = 0; g < 2; ++g) EXPECT_EQ(d.cache().live_positions(id, 0, g), expected) << "seen " << seen;
  }
  EXPECT_EQ(toy.score_calls(), 6 * 2) << "once per step and head over budget";
  try {
    OldestKeysPolicy(token_budget(2), 3);
    ADD_FAILURE() << "a budget below what the policy protects was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("oldest policy"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot hold the 3 tokens"), std::string::npos) << e.what();
  }
}

// Forced DMS flags are drawn per key from the seed, so a sequence keeps the same keys however
// its tokens are split into steps, whoever shares the step and whatever its id (a forked or
// preempted sequence decides as before); about the requested share is flagged.
TEST(Policies, ForcedDmsFlagsDependOnlyOnTheKey) {
  const DmsPolicyOptions o{.window = 8, .forced_fraction = 0.75, .seed = 9};
  PolicyDriver alone(attention_config(2, 2, 2, 16), 16, make_dms_policy(o), 51);
  PolicyDriver shared(attention_config(2, 2, 2, 16), 16, make_dms_policy(o), 52);
  const SequenceId a = alone.add(), other = shared.add(), s = shared.add();
  ASSERT_NE(a, s);
  for (int64_t n : {100, 1, 1, 1, 1}) alone.step({{a, n}});
  shared.step({{s, 30}, {other, 5}});
  shared.step({{s, 70}, {other, 1}});
  for (int i = 0; i < 4; ++i) shared.step({{s, 1}, {other, 1}});
  EXPECT_LE(alone.worst_error(), kTolerance);
  EXPECT_LE(shared.worst_error(), kTolerance);
  for (int64_t l = 0; l < 2; ++l)
    for (int64_t g = 0; g < 2; ++g)
      EXPECT_EQ(alone.cache().live_positions(a, l, g), shared.cache().live_positions(s, l, g));
  // 4 heads x 103 decided keys; the share's standard deviation is about 0.02.
  EXPECT_NEAR(alone.cache().sequence_stats(a).eviction_fraction, 0.75, 0.08);
  const DmsPolicyOptions other_seed{.window = 8, .forced_fraction = 0.75, .seed = 10};
  PolicyDriver reseeded(attention_config(2, 2, 2, 16), 16, make_dms_policy(other_seed), 51);
  const SequenceId r = reseeded.add();
  for (int64_t n : {100, 1, 1, 1, 1}) reseeded.step({{r, n}});
  EXPECT_NE(alone.cache().live_positions(a, 0, 0), reseeded.cache().live_positions(r, 0, 0));
}

TEST(Policies, BadSettingsAreClearErrors) {
  auto message = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  auto has = [](const std::string& m, const std::string& part) { return m.find(part) != std::string::npos; };
  Budget both = token_budget(5);
  both.compression_ratio = 2;
  EXPECT_TRUE(has(message([&] { make_tova_policy({both}); }), "not both"));
  EXPECT_TRUE(has(message([&] { make_tova_policy({Budget{}}); }), "not neither"));
  EXPECT_TRUE(has(message([&] { make_h2o_policy({ratio_budget(0.5, 8), 0.5}); }), "at least 1"));
  EXPECT_TRUE(has(message([&] { make_h2o_policy({ratio_budget(2, 8), 1.5}); }), "recent share"));
  EXPECT_TRUE(has(message([&] { make_streaming_policy({token_budget(4), 4}); }), "cannot hold the 5 tokens"));
  EXPECT_TRUE(has(message([&] { make_dms_policy({.window = -1}); }), "window"));
  EXPECT_TRUE(has(message([&] { make_dms_policy({.window = 8, .forced_fraction = 1.5}); }), "forced eviction fraction"));
  EXPECT_TRUE(has(message([&] { make_policy("lru", {}); }), "unknown eviction policy 'lru'"));
  for (const char* name : {"dms", "dense", "streaming", "h2o", "tova"}) {
    PolicyOptions o;
    o.budget = ratio_budget(4, 64);
    EXPECT_EQ(make_policy(name, o)->name(), name);
  }
}

}  // namespace
}  // namespace dms::test
