// Filling a cache with a synthetic context (bench_context): the keys each policy keeps after
// the chunks, re-derived from the policy's rule, and a context that does not fit leaves the
// cache as it was.
#include <gtest/gtest.h>

#include "dms/eval/bench_context.h"
#include "test_eval_bench_helpers.h"

namespace dms::eval {
namespace {

using namespace test_bench;

// Every head of every layer of sequence `id` holds `per_head` keys.
void expect_live_per_head(const PagedKVCache& cache, SequenceId id, int64_t per_head, const std::string& what) {
  for (int64_t l = 0; l < cache.n_layers(); ++l)
    for (int64_t g = 0; g < cache.n_kv_heads(); ++g)
      EXPECT_EQ(static_cast<int64_t>(cache.live_positions(id, l, g).size()), per_head) << what << " layer " << l << " head " << g;
}

TEST(BenchContext, DenseKeepsEveryTokenOfTheContext) {
  const BenchSetup s = tiny_setup();
  const ModelConfig& c = s.model.info.config;
  for (int64_t context : {1, 23, 24, 100}) {  // within one chunk, exactly one, several with a partial last
    auto cache = s.dense_cache("dense", 1, context);
    const auto [k, v] = synthetic_kv(c, std::min(context, s.chunk), s.kv_dtype);
    const SequenceId id = store_context(*cache, k, v, context, s.chunk);
    const SequenceStats st = cache->sequence_stats(id);
    EXPECT_EQ(st.tokens_seen, context);
    EXPECT_EQ(st.live_slots, context * c.n_layers * c.n_kv_heads);
    EXPECT_EQ(st.blocks, c.n_layers * c.n_kv_heads * ceil_div(context, kBlock));
    expect_live_per_head(*cache, id, context, "context " + std::to_string(context));
  }
}

// Forced fraction 1 flags every decided key j (decided by token j + 1) to leave after query
// j + window; the newest key is not decided yet. After c tokens the next query is c, so the
// keys still live are those with j + window + 1 > c, and key c - 1.
TEST(BenchContext, DmsFlaggingEveryKeyKeepsTheWindow) {
  const int64_t window = 8;
  const BenchSetup s = tiny_setup(forced_dms(1.0, window));
  for (int64_t context : {5, 9, 40, 100}) {
    int64_t expected = 0;
    for (int64_t j = 0; j < context; ++j) expected += j == context - 1 || j + window + 1 > context;
    auto cache = s.dense_cache("dms", 1, context);
    const auto [k, v] = synthetic_kv(s.model.info.config, std::min(context, s.chunk), s.kv_dtype);
    const SequenceId id = store_context(*cache, k, v, context, s.chunk);
    EXPECT_EQ(cache->tokens_seen(id), context);
    expect_live_per_head(*cache, id, expected, "context " + std::to_string(context));
  }
}

TEST(BenchContext, DmsFlaggingNothingKeepsEveryKey) {
  const BenchSetup s = tiny_setup(forced_dms(0.0));
  auto cache = s.dense_cache("dms", 1, 70);
  const auto [k, v] = synthetic_kv(s.model.info.config, s.chunk, s.kv_dtype);
  expect_live_per_head(*cache, store_context(*cache, k, v, 70, s.chunk), 70, "fraction 0");
}

TEST(BenchContext, StreamingKeepsItsBudget) {
  PolicyOptions po;
  po.budget.tokens = 20;
  const BenchSetup s = tiny_setup(po, 7);
  for (int64_t context : {12, 20, 61}) {
    auto cache = s.dense_cache("streaming", 1, context);
    const auto [k, v] = synthetic_kv(s.model.info.config, std::min(context, s.chunk), s.kv_dtype);
    expect_live_per_head(*cache, store_context(*cache, k, v, context, s.chunk), std::min<int64_t>(context, 20),
                         "context " + std::to_string(context));
  }
}

TEST(BenchContext, AContextThatDoesNotFitLeavesTheCacheAsItWas) {
  const BenchSetup s = tiny_setup();
  const ModelConfig& c = s.model.info.config;
  // Room for one sequence of 64 tokens: 4 blocks per head.
  auto cache = s.cache_of_bytes("dense", c.n_layers * c.n_kv_heads * 4 * block_bytes(c));
  const auto [k, v] = synthetic_kv(c, s.chunk, s.kv_dtype);
  const SequenceId first = store_context(*cache, k, v, 64, s.chunk);
  EXPECT_THROW(store_context(*cache, k, v, 30, s.chunk), CacheFull);
  EXPECT_EQ(cache->sequences(), std::vector<SequenceId>{first});
  EXPECT_EQ(cache->stats().blocks_used, c.n_layers * c.n_kv_heads * 4);
  EXPECT_THROW(store_context(*cache, k, v, 64, 0), Error);
}

}  // namespace
}  // namespace dms::eval
