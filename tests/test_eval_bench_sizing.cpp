// One sizing rule for caches that keep sequences dense (cache_sizing): the bytes against the
// model's shape, room for every sequence at its full length whatever the block boundaries,
// at most one spare block per (sequence, layer, KV head), and a greedy run through the engine
// that never preempts.
#include <gtest/gtest.h>

#include "dms/cache/cache_sizing.h"
#include "dms/eval/bench_context.h"
#include "dms/eval/greedy_runs.h"
#include "test_eval_bench_helpers.h"

namespace dms::eval {
namespace {

using namespace test_bench;

TEST(CacheSizing, BytesAreTokensPlusABlockPerSequence) {
  const ModelConfig& c = test::eval_model("tiny").info.config;
  // K and V, layers x KV heads x head dim, per token.
  const int64_t per_token_f32 = 2 * 2 * 2 * 16 * 4;
  EXPECT_EQ(dense_cache_bytes(c, at::kFloat, 16, 3, 100), 3 * (100 + 16) * per_token_f32);
  EXPECT_EQ(dense_cache_bytes(c, at::kBFloat16, 8, 1, 0), 8 * per_token_f32 / 2);
  EXPECT_THROW(dense_cache_bytes(c, at::kFloat, 0, 1, 1), Error);
}

TEST(CacheSizing, HoldsEverySequenceDenseWithAtMostOneSpareBlockPerHead) {
  const BenchSetup s = tiny_setup();
  const ModelConfig& c = s.model.info.config;
  for (int64_t sequences : {1, 3, 7})
    for (int64_t tokens : {1, 15, 16, 17, 64, 100}) {
      const std::string what = std::to_string(sequences) + " x " + std::to_string(tokens);
      const PagedCacheOptions o = dense_cache_options(c, s.kv_dtype, kBlock, sequences, tokens);
      EXPECT_EQ(o.kv_dtype, s.kv_dtype);
      EXPECT_EQ(o.block_size, kBlock);
      const int64_t needed = sequences * c.n_kv_heads * ceil_div(tokens, kBlock);  // per layer
      EXPECT_GE(o.blocks_per_layer, needed) << what;
      EXPECT_LE(o.blocks_per_layer - needed, sequences * c.n_kv_heads) << what;
      auto cache = s.dense_cache("dense", sequences, tokens);
      EXPECT_EQ(cache->options().blocks_per_layer, o.blocks_per_layer) << what;
      const auto [k, v] = synthetic_kv(c, std::min(tokens, s.chunk), s.kv_dtype);
      for (int64_t i = 0; i < sequences; ++i) EXPECT_NO_THROW(store_context(*cache, k, v, tokens, s.chunk)) << what;
    }
}

// Prompts of different lengths, more than run at once: every token goes through the forward
// once (a preempted sequence would be prefilled again and count twice).
TEST(CacheSizing, GreedyRunsNeverPreempt) {
  const Model& model = test::eval_model("tiny");
  std::vector<std::vector<int32_t>> prompts;
  int64_t fed = 0;
  const int64_t new_tokens = 21;
  for (int64_t len : {5, 31, 16, 47, 12}) {
    std::vector<int32_t> p;
    for (int64_t i = 0; i < len; ++i) p.push_back(static_cast<int32_t>(1 + (i * 7 + len) % 300));
    prompts.push_back(p);
    fed += len + new_tokens - 1;  // the last generated token is not fed back
  }
  EngineSettings settings;
  settings.block_size = 8;
  settings.step_tokens = 20;
  settings.max_running = 3;
  for (const std::string policy : {"dense", "dms"}) {
    PolicyUnderTest p{policy, policy, {}};
    p.options.dms.window = 8;
    const GreedyRun run = run_greedy(model, p, prompts, new_tokens, settings);
    EXPECT_EQ(run.tokens_run, fed) << policy;
    for (const auto& t : run.tokens) EXPECT_EQ(static_cast<int64_t>(t.size()), new_tokens) << policy;
  }
}

}  // namespace
}  // namespace dms::eval
