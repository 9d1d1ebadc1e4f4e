// The batched engine on the default model: every request's greedy tokens equal a plain
// single-sequence decode over the dense cache (test_model_fixtures' greedy), whatever the
// batching, the order of arrival, preemption for lack of blocks, or the prefix cache.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <random>
#include <set>

#include "dms/engine/engine.h"
#include "test_model_fixtures.h"

namespace dms::test {
namespace {

const Model& default_model() {
  static const Model model = [] {
    const char* path = std::getenv("DMS_DEFAULT_MODEL");
    if (!path || !*path) throw Error("DMS_DEFAULT_MODEL is not set; run scripts/fetch-default-model");
    return load_model(path, at::kFloat);
  }();
  return model;
}

std::unique_ptr<PagedKVCache> dense_cache(const Model& m, int64_t blocks_per_layer, int64_t block_size = 16) {
  return std::make_unique<PagedKVCache>(m.info.config, PagedCacheOptions{at::kFloat, block_size, blocks_per_layer},
                                        make_dense_policy());
}

GenerationParams greedy_params(int64_t n) {
  GenerationParams p;
  p.max_tokens = n;  // no stop ids: exactly n tokens
  return p;
}

std::vector<int32_t> prompt(const Model& m, const std::string& text) { return m.tokenizer->encode(text, false); }

std::vector<int64_t> as_int64(const std::vector<int32_t>& v) { return {v.begin(), v.end()}; }

const std::vector<std::string> kPrompts = {
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "1, 2, 3, 4,",
};

TEST(Engine, BatchedGreedyEqualsSingleSequenceDecode) {
  const Model& m = default_model();
  const int64_t n = 12;
  auto cache = dense_cache(m, 64);
  Engine engine(m, *cache, EngineOptions{.max_step_tokens = 8, .max_running = 3});  // chunked prefill, a queue
  std::vector<int64_t> ids;
  for (const auto& text : kPrompts) ids.push_back(engine.submit(prompt(m, text), greedy_params(n)));
  engine.run();
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    const GenerationResult& r = engine.result(ids[i]);
    EXPECT_EQ(r.stop_reason, "max tokens");
    EXPECT_EQ(as_int64(r.tokens), greedy(*m.transformer, as_int64(prompt(m, kPrompts[i])), n)) << kPrompts[i];
  }
  EXPECT_EQ(cache->stats().blocks_used, 0) << "finished requests keep no blocks";
  EXPECT_EQ(engine.stats().generated_tokens, n * static_cast<int64_t>(kPrompts.size()));
}

TEST(Engine, PreemptionForLackOfBlocksChangesNoToken) {
  const Model& m = default_model();
  const int64_t n = 16;
  // Block size 4 and room for about 40 keys per head: four sequences of 20-40 tokens cannot all fit.
  auto cache = dense_cache(m, 30, 4);
  Engine engine(m, *cache, EngineOptions{.max_step_tokens = 64, .max_running = 4});
  std::vector<int64_t> ids;
  for (const auto& text : kPrompts) ids.push_back(engine.submit(prompt(m, text), greedy_params(n)));
  engine.run();
  EXPECT_GT(engine.stats().preemptions, 0) << "the pool was meant to be too small for all at once";
  for (size_t i = 0; i < kPrompts.size(); ++i)
    EXPECT_EQ(as_int64(engine.result(ids[i]).tokens), greedy(*m.transformer, as_int64(prompt(m, kPrompts[i])), n))
        << kPrompts[i];
  EXPECT_EQ(cache->stats().blocks_used, 0);
}

TEST(Engine, ASequenceThatCannotFitEndsCleanly) {
  const Model& m = default_model();
  auto cache = dense_cache(m, 3, 4);  // one 4-key block per KV head: fewer keys than the prompt
  Engine engine(m, *cache);
  const int64_t big = engine.submit(prompt(m, kPrompts[2]), greedy_params(4));
  engine.run();
  EXPECT_EQ(engine.result(big).stop_reason, "kv cache full");
  EXPECT_TRUE(engine.result(big).tokens.empty());
  EXPECT_EQ(cache->stats().blocks_used, 0);
  // The engine goes on serving what fits.
  const int64_t small = engine.submit(prompt(m, "Hi"), greedy_params(2));
  engine.run();
  EXPECT_EQ(as_int64(engine.result(small).tokens), greedy(*m.transformer, as_int64(prompt(m, "Hi")), 2));
}

TEST(Engine, StopTokensAndStopStringsEndRequests) {
  const Model& m = default_model();
  auto cache = dense_cache(m, 64);
  Engine engine(m, *cache);
  const auto ids = prompt(m, kPrompts[3]);
  const auto expected = greedy(*m.transformer, as_int64(ids), 8);
  GenerationParams by_token = greedy_params(8);
  by_token.stop_ids = {static_cast<int32_t>(expected[2])};
  GenerationParams by_text = greedy_params(8);
  const std::string full = m.tokenizer->decode(std::vector<int32_t>(expected.begin(), expected.end()));
  by_text.stop_strings = {full.substr(3, 2)};
  const int64_t a = engine.submit(ids, by_token), b = engine.submit(ids, by_text);
  engine.run();
  EXPECT_EQ(engine.result(a).stop_reason, "stop token");
  EXPECT_EQ(as_int64(engine.result(a).tokens), std::vector<int64_t>(expected.begin(), expected.begin() + 3));
  EXPECT_EQ(engine.result(b).stop_reason, "stop string");
  EXPECT_EQ(engine.result(b).text, full.substr(0, full.find(full.substr(3, 2))));
}

TEST(Engine, AbortedRequestsGiveTheirBlocksBackAndOthersGoOnUnchanged) {
  const Model& m = default_model();
  const int64_t n = 10;
  auto cache = dense_cache(m, 64);
  Engine engine(m, *cache, EngineOptions{.max_step_tokens = 16, .max_running = 2});
  std::vector<int64_t> ids;
  for (const auto& text : kPrompts) ids.push_back(engine.submit(prompt(m, text), greedy_params(n)));
  for (int i = 0; i < 6; ++i) engine.step();
  ASSERT_EQ(engine.running(), 2);
  ASSERT_EQ(engine.waiting(), 2);
  engine.abort(ids[1]);  // running, mid-generation
  engine.abort(ids[3]);  // still waiting
  EXPECT_EQ(engine.running(), 1);
  EXPECT_EQ(engine.waiting(), 1);
  engine.run();
  for (int64_t i : {1, 3}) {
    EXPECT_EQ(engine.result(ids[i]).stop_reason, "aborted");
    EXPECT_LT(static_cast<int64_t>(engine.result(ids[i]).tokens.size()), n);
  }
  for (int64_t i : {0, 2})
    EXPECT_EQ(as_int64(engine.result(ids[i]).tokens), greedy(*m.transformer, as_int64(prompt(m, kPrompts[i])), n));
  EXPECT_EQ(cache->stats().blocks_used, 0);
  engine.abort(ids[0]);  // finished: nothing to do
  EXPECT_EQ(engine.result(ids[0]).stop_reason, "max tokens");
  engine.release(ids[0]);
  EXPECT_THROW(engine.result(ids[0]), Error) << "a released request is forgotten";
}

// Requests enter as the pools' free blocks allow, so with the same pools a policy that evicts
// runs more sequences at once than dense, and dense never has to preempt what it admitted.
TEST(Engine, AdmissionFollowsTheBlocksThePoolsHaveFree) {
  const Model& m = default_model();
  const auto max_running_of = [&](std::unique_ptr<EvictionPolicy> policy, int64_t& preemptions) {
    // Block size 4, 90 blocks per layer: 30 per KV head. Each prompt takes 4-6 blocks per head.
    PagedKVCache cache(m.info.config, PagedCacheOptions{at::kFloat, 4, 90}, std::move(policy));
    Engine engine(m, cache, EngineOptions{.max_step_tokens = 64, .max_running = 16});
    for (int i = 0; i < 12; ++i) engine.submit(prompt(m, kPrompts[i % kPrompts.size()]), greedy_params(24));
    int64_t most = 0;
    while (!engine.idle()) {
      engine.step();
      most = std::max(most, engine.running());
    }
    EXPECT_EQ(cache.stats().blocks_used, 0);
    preemptions = engine.stats().preemptions;
    return most;
  };
  int64_t dense_preemptions = 0, dms_preemptions = 0;
  const int64_t dense = max_running_of(make_dense_policy(), dense_preemptions);
  const int64_t dms = max_running_of(make_dms_policy({.window = 4, .forced_fraction = 0.875}), dms_preemptions);
  EXPECT_GT(dms, dense) << "dense " << dense << ", dms " << dms << " (preemptions " << dense_preemptions << ", " << dms_preemptions << ")";
  EXPECT_LT(dense, 12) << "the pools were meant to be too small for every request at once";
}

std::vector<GenerationParams> sampled_params(int64_t samples, int64_t n) {
  std::vector<GenerationParams> params(samples, greedy_params(n));
  for (int64_t i = 0; i < samples; ++i) {
    params[i].sampling.temperature = 0.9;
    params[i].sampling.seed = 100 + i;
  }
  return params;
}

// The tokens of one request run alone in an engine of its own.
std::vector<int32_t> run_alone(const Model& m, const std::string& policy, const PolicyOptions& o,
                               const std::vector<int32_t>& ids, const GenerationParams& p, int64_t* peak_bytes) {
  PagedKVCache cache(m.info.config, PagedCacheOptions{at::kFloat, 4, 256}, make_policy(policy, o));
  Engine engine(m, cache);
  const int64_t r = engine.submit(ids, p);
  engine.run();
  if (peak_bytes) *peak_bytes += engine.stats().peak_bytes_held;
  return engine.result(r).tokens;
}

// Samples forked from one prefill give, token for token, what the same seeds give run one by
// one, for every policy; the prompt is run once and its keys held once.
TEST(Engine, ForkedSamplesGiveWhatIndependentRunsGive) {
  const Model& m = default_model();
  const int64_t samples = 4, n = 10;
  PolicyOptions o;
  o.dms = {.window = 4, .forced_fraction = 0.5};
  o.budget.tokens = 16;
  const auto ids = prompt(m, kPrompts[2]);
  const auto params = sampled_params(samples, n);
  for (const std::string& policy : policy_names()) {
    SCOPED_TRACE(policy);
    PagedKVCache cache(m.info.config, PagedCacheOptions{at::kFloat, 4, 256}, make_policy(policy, o));
    Engine engine(m, cache);
    const auto requests = engine.submit_samples(ids, params);
    ASSERT_EQ(requests.size(), static_cast<size_t>(samples));
    engine.run();
    int64_t peak_alone = 0;
    std::set<std::vector<int32_t>> distinct;
    for (int64_t i = 0; i < samples; ++i) {
      const GenerationResult& r = engine.result(requests[i]);
      EXPECT_EQ(r.tokens, run_alone(m, policy, o, ids, params[i], &peak_alone)) << "sample " << i;
      distinct.insert(r.tokens);
    }
    EXPECT_GT(distinct.size(), 1u) << "the seeds were meant to give different samples";
    EXPECT_EQ(engine.stats().tokens_run, static_cast<int64_t>(ids.size()) + samples * (n - 1))
        << "the prompt runs once, then one token per sample and step";
    EXPECT_LT(engine.stats().peak_bytes_held, peak_alone);
    EXPECT_EQ(cache.stats().blocks_used, 0);
  }
}

// A leader aborted before its prefill ended hands its samples on; they still give their tokens.
TEST(Engine, SamplesOfAnAbortedLeaderGoOn) {
  const Model& m = default_model();
  const auto ids = prompt(m, kPrompts[1]);
  const auto params = sampled_params(3, 6);
  PagedKVCache cache(m.info.config, PagedCacheOptions{at::kFloat, 4, 256}, make_dense_policy());
  Engine engine(m, cache, EngineOptions{.max_step_tokens = 8});
  const auto requests = engine.submit_samples(ids, params);
  engine.step();  // the first chunk of the prompt
  engine.abort(requests[0]);
  engine.run();
  EXPECT_EQ(engine.result(requests[0]).stop_reason, "aborted");
  for (int i : {1, 2})
    EXPECT_EQ(engine.result(requests[i]).tokens, run_alone(m, "dense", {}, ids, params[i], nullptr)) << i;
  EXPECT_EQ(engine.stats().tokens_run, 8 + static_cast<int64_t>(ids.size()) + 2 * 5);
  EXPECT_EQ(cache.stats().blocks_used, 0);
}

PolicyOptions prefix_test_options() {
  PolicyOptions o;
  o.dms = {.window = 4, .forced_fraction = 0.5};
  o.budget.tokens = 16;
  return o;
}

// A conversation's next turn forks the state the last turn ended with and runs only the new
// tokens (and the last sampled one, never run); it gives what running the whole history gives.
TEST(Engine, PrefixCacheContinuesAConversation) {
  const Model& m = default_model();
  const PolicyOptions o = prefix_test_options();
  for (const std::string& policy : policy_names()) {
    SCOPED_TRACE(policy);
    PagedKVCache cache(m.info.config, PagedCacheOptions{at::kFloat, 4, 256}, make_policy(policy, o));
    Engine engine(m, cache, EngineOptions{.prefix_cache = true});
    const std::vector<int32_t> first = prompt(m, kPrompts[0]);
    const int64_t a = engine.submit(first, greedy_params(6));
    engine.run();
    std::vector<int32_t> second = first;
    const auto& reply = engine.result(a).tokens;
    second.insert(second.end(), reply.begin(), reply.end());
    const auto more = prompt(m, " And the capital of Italy is");
    second.insert(second.end(), more.begin(), more.end());
    const int64_t b = engine.submit(second, greedy_params(6));
    engine.run();
    const GenerationResult& r = engine.result(b);
    EXPECT_EQ(r.cached_tokens, static_cast<int64_t>(first.size() + reply.size()) - 1);
    EXPECT_EQ(r.prompt_tokens, static_cast<int64_t>(more.size()) + 1);
    EXPECT_EQ(r.tokens, run_alone(m, policy, o, second, greedy_params(6), nullptr));
    if (policy == "dense") {
      EXPECT_EQ(as_int64(r.tokens), greedy(*m.transformer, as_int64(second), 6));
    }
    EXPECT_GT(cache.stats().blocks_used, 0) << "the prefixes stay in the cache";
    engine.clear_prefix_cache();
    EXPECT_EQ(engine.prefix_entries(), 0);
    EXPECT_EQ(cache.stats().blocks_used, 0);
  }
}

// A prompt seen before runs nothing: its state and next-token logits were kept, so its samples
// are drawn at once and are what the same seeds give on a prompt run anew.
TEST(Engine, PrefixCacheServesARepeatedPromptWithoutRunningIt) {
  const Model& m = default_model();
  const PolicyOptions o = prefix_test_options();
  const auto ids = prompt(m, kPrompts[2]);
  const auto params = sampled_params(3, 6);
  for (const std::string& policy : {std::string("dense"), std::string("dms")}) {
    SCOPED_TRACE(policy);
    PagedKVCache cache(m.info.config, PagedCacheOptions{at::kFloat, 4, 256}, make_policy(policy, o));
    Engine engine(m, cache, EngineOptions{.prefix_cache = true});
    const int64_t a = engine.submit(ids, greedy_params(5));
    engine.run();
    const int64_t tokens_before = engine.stats().tokens_run;
    const int64_t b = engine.submit(ids, greedy_params(5));
    const auto samples = engine.submit_samples(ids, params);
    engine.run();
    EXPECT_EQ(engine.result(b).prompt_tokens, 0);
    EXPECT_EQ(engine.result(b).cached_tokens, static_cast<int64_t>(ids.size()));
    EXPECT_EQ(engine.result(b).tokens, engine.result(a).tokens);
    for (size_t i = 0; i < samples.size(); ++i) {
      EXPECT_EQ(engine.result(samples[i]).prompt_tokens, 0);
      EXPECT_EQ(engine.result(samples[i]).tokens, run_alone(m, policy, o, ids, params[i], nullptr)) << i;
    }
    EXPECT_EQ(engine.stats().tokens_run - tokens_before, 4 + 3 * 5) << "only the sampled tokens ran";
    EXPECT_EQ(engine.stats().prefix_hit_tokens, 2 * static_cast<int64_t>(ids.size()));
  }
}

// A prompt's state is kept at the end of each prefill chunk: a request sharing only the start
// of an earlier prompt forks the longest such state inside what they share.
TEST(Engine, PrefixCacheReusesTheChunksOfAnEarlierPrompt) {
  const Model& m = default_model();
  const PolicyOptions o = prefix_test_options();
  const auto first = prompt(m, kPrompts[2]);
  ASSERT_GT(first.size(), 17u);
  std::vector<int32_t> second(first.begin(), first.begin() + 17);
  const auto tail = prompt(m, " built a boat");
  second.insert(second.end(), tail.begin(), tail.end());
  for (const std::string& policy : policy_names()) {
    SCOPED_TRACE(policy);
    PagedKVCache cache(m.info.config, PagedCacheOptions{at::kFloat, 4, 256}, make_policy(policy, o));
    Engine engine(m, cache, EngineOptions{.max_step_tokens = 8, .prefix_cache = true});
    engine.submit(first, greedy_params(3));
    engine.run();
    const int64_t b = engine.submit(second, greedy_params(6));
    engine.run();
    EXPECT_EQ(engine.result(b).cached_tokens, 16) << "chunks of 8: the states after 8 and 16 tokens";
    EXPECT_EQ(engine.result(b).tokens, run_alone(m, policy, o, second, greedy_params(6), nullptr));
    if (policy == "dense") {
      EXPECT_EQ(as_int64(engine.result(b).tokens), greedy(*m.transformer, as_int64(second), 6));
    }
  }
}

// A prompt's cache points end its prefill chunks there (e.g. where a shared system message ends),
// so a later request sharing that much reuses all of it, whatever the chunk size.
TEST(Engine, PrefixCacheKeepsThePromptAtItsCachePoints) {
  const Model& m = default_model();
  const auto first = prompt(m, kPrompts[2]);
  std::vector<int32_t> second(first.begin(), first.begin() + 13);
  const auto tail = prompt(m, " built a boat");
  second.insert(second.end(), tail.begin(), tail.end());
  auto cache = dense_cache(m, 64);
  Engine engine(m, *cache, EngineOptions{.prefix_cache = true});
  GenerationParams p = greedy_params(3);
  p.cache_points = {5, 13};
  engine.submit(first, p);
  engine.run();
  EXPECT_EQ(engine.stats().steps, 3 + 2) << "the prompt in chunks of 5, 8 and the rest, then 2 decode steps";
  const int64_t b = engine.submit(second, greedy_params(6));
  engine.run();
  EXPECT_EQ(engine.result(b).cached_tokens, 13);
  EXPECT_EQ(as_int64(engine.result(b).tokens), greedy(*m.transformer, as_int64(second), 6));
}

// Kept prefixes are only a cache: when running sequences need their blocks they are dropped,
// and nothing is preempted while one is left.
TEST(Engine, PrefixCacheGivesWayToRunningSequences) {
  const Model& m = default_model();
  const int64_t heads = m.info.config.n_kv_heads;
  auto cache = dense_cache(m, 7 * heads);  // 7 blocks of 16 keys per KV head
  Engine engine(m, *cache, EngineOptions{.prefix_cache = true});
  engine.submit(prompt(m, kPrompts[3]), greedy_params(20));
  engine.run();
  ASSERT_GT(engine.prefix_entries(), 0);
  // Two sequences of 3 blocks per head each fit only in the blocks the prefixes hold.
  std::vector<int64_t> ids;
  for (int i : {1, 2}) ids.push_back(engine.submit(prompt(m, kPrompts[i]), greedy_params(28)));
  engine.run();
  for (int i : {0, 1})
    EXPECT_EQ(as_int64(engine.result(ids[i]).tokens), greedy(*m.transformer, as_int64(prompt(m, kPrompts[i + 1])), 28));
  EXPECT_GT(engine.stats().prefix_evictions, 0);
  EXPECT_EQ(engine.stats().preemptions, 0);
}

// Random traffic over a few shared prefixes in a pool too small to keep them all: requests come
// in waves, some are aborted, entries are dropped and sequences preempted. Every request that
// ends gives the plain decode's greedy tokens, and when all is done the only blocks in use are
// those the prefix cache keeps, which it gives back.
TEST(Engine, PrefixCacheUnderRandomTrafficGivesTheSameTokensAndLeaksNothing) {
  const Model& m = default_model();
  const std::vector<std::string> tails = {" and then", " Why?", " 5, 6, 7"};
  const int64_t n = 12;
  auto cache = dense_cache(m, 6 * m.info.config.n_kv_heads);
  Engine engine(m, *cache, EngineOptions{.max_step_tokens = 8, .max_running = 4, .prefix_cache = true});
  std::mt19937 rng(7);
  std::map<std::vector<int32_t>, std::vector<int64_t>> expected;  // prompt -> greedy tokens
  std::vector<std::pair<int64_t, std::vector<int32_t>>> submitted;
  std::set<int64_t> aborted;
  for (int wave = 0; wave < 16; ++wave) {
    for (int k = 1 + static_cast<int>(rng() % 3); k > 0; --k) {
      std::vector<int32_t> ids = prompt(m, kPrompts[rng() % kPrompts.size()]);
      for (int t = static_cast<int>(rng() % 3); t > 0; --t) {
        const auto more = prompt(m, tails[rng() % tails.size()]);
        ids.insert(ids.end(), more.begin(), more.end());
      }
      submitted.push_back({engine.submit(ids, greedy_params(n)), ids});
    }
    for (int steps = 1 + static_cast<int>(rng() % 6); steps > 0 && !engine.idle(); --steps) engine.step();
    if (rng() % 4 == 0) {
      const int64_t victim = submitted[rng() % submitted.size()].first;
      if (!engine.result(victim).finished) aborted.insert(victim);
      engine.abort(victim);
    }
  }
  engine.run();
  for (const auto& [id, ids] : submitted) {
    if (aborted.count(id)) continue;
    auto [it, fresh] = expected.try_emplace(ids);
    if (fresh) it->second = greedy(*m.transformer, as_int64(ids), n);
    EXPECT_EQ(as_int64(engine.result(id).tokens), it->second) << "request " << id;
  }
  EXPECT_GT(engine.stats().prefix_hit_tokens, 0);
  EXPECT_GT(engine.stats().prefix_evictions, 0) << "the pool was meant to be too small to keep every prefix";
  EXPECT_GT(engine.stats().preemptions, 0) << "and too small for every request at once";
  EXPECT_EQ(cache->stats().blocks_used, engine.prefix_blocks());
  engine.clear_prefix_cache();
  EXPECT_EQ(cache->stats().blocks_used, 0);
}

TEST(Engine, BadRequestsAreRefused) {
  const Model& m = default_model();
  auto cache = dense_cache(m, 64);
  Engine engine(m, *cache);
  EXPECT_THROW(engine.submit({}, greedy_params(4)), Error);
  EXPECT_THROW(engine.submit(prompt(m, "x"), greedy_params(0)), Error);
  const std::vector<int32_t> too_long(static_cast<size_t>(m.info.config.max_position), 1);
  EXPECT_THROW(engine.submit(too_long, greedy_params(1)), Error);
  EXPECT_THROW(engine.result(99), Error);
  EXPECT_THROW(engine.submit_samples(prompt(m, "x"), {}), Error);
  EXPECT_THROW(engine.submit_samples(prompt(m, "x"), {greedy_params(2), greedy_params(0)}), Error);
  EXPECT_THROW(engine.result(0), Error) << "a refused group adds no request";
  EXPECT_TRUE(engine.idle());
}

}  // namespace
}  // namespace dms::test
