// The largest batch a KV budget holds (bench_budget) on the tiny Llama: dense against the block
// arithmetic, every policy against a direct search that fills a fresh cache with n sequences
// for each n, the search's limit, and a budget that holds no block.
#include <gtest/gtest.h>

#include <map>

#include "dms/eval/bench_budget.h"
#include "dms/eval/bench_context.h"
#include "test_eval_bench_helpers.h"

namespace dms::eval {
namespace {

using namespace test_bench;

// Whether a fresh cache of `budget` bytes takes n sequences of `context` tokens and then a
// decode step of one token for each.
bool holds(const BenchSetup& s, const std::string& policy, int64_t context, int64_t budget, int64_t n) {
  auto cache = s.cache_of_bytes(policy, budget);
  const auto [k, v] = synthetic_kv(s.model.info.config, std::min(context, s.chunk), s.kv_dtype);
  std::vector<StepSequence> decode;
  for (int64_t i = 0; i < n; ++i) {
    try {
      decode.push_back({store_context(*cache, k, v, context, s.chunk), 1});
    } catch (const CacheFull&) {
      return false;
    }
  }
  return cache->blocks_short(decode) == 0;
}

int64_t direct_search(const BenchSetup& s, const std::string& policy, int64_t context, int64_t budget) {
  int64_t n = 0;
  while (holds(s, policy, context, budget, n + 1)) ++n;
  return n;
}

TEST(BenchBudget, DenseBatchFollowsTheBlockArithmetic) {
  const BenchSetup s = tiny_setup();
  const ModelConfig& c = s.model.info.config;
  const int64_t budget = 200 << 10;
  // A layer's pool: budget / (layers x one block); a sequence of c tokens with its next token
  // takes ceil((c + 1) / block) blocks per KV head.
  const int64_t blocks_per_layer = budget / (c.n_layers * block_bytes(c));
  for (int64_t context : {47, 48, 64, 100}) {
    const BudgetResult r = largest_batch(s, "dense", context, budget, 1000);
    const int64_t expected = blocks_per_layer / (c.n_kv_heads * ceil_div(context + 1, kBlock));
    const int64_t one = c.n_layers * c.n_kv_heads * ceil_div(context, kBlock) * block_bytes(c);
    EXPECT_EQ(r.max_batch, expected) << "context " << context;
    EXPECT_EQ(r.bytes_held, expected * one) << "context " << context;
    EXPECT_EQ(r.divided, budget / one) << "context " << context;
    EXPECT_EQ(r.pool_bytes, blocks_per_layer * c.n_layers * block_bytes(c));
    EXPECT_EQ(r.policy, "dense");
    EXPECT_EQ(r.context, context);
  }
}

TEST(BenchBudget, EveryPolicyAgainstADirectSearch) {
  PolicyOptions po = forced_dms(0.75);
  po.budget.tokens = 24;
  const BenchSetup s = tiny_setup(po, 20);
  const int64_t budget = 96 << 10;
  std::map<std::string, int64_t> at_64;
  for (const std::string policy : {"dense", "dms", "streaming"})
    for (int64_t context : {30, 64}) {
      const BudgetResult r = largest_batch(s, policy, context, budget, 1000);
      EXPECT_EQ(r.max_batch, direct_search(s, policy, context, budget)) << policy << " context " << context;
      EXPECT_LE(r.bytes_held, r.pool_bytes) << policy;
      if (context == 64) at_64[policy] = r.max_batch;
    }
  EXPECT_GT(at_64["dms"], at_64["dense"]);
  EXPECT_GT(at_64["streaming"], at_64["dense"]);
}

TEST(BenchBudget, TheSearchStopsAtItsLimit) {
  const BenchSetup s = tiny_setup();
  const int64_t budget = 200 << 10;
  ASSERT_GT(largest_batch(s, "dense", 40, budget, 1000).max_batch, 3);
  const BudgetResult r = largest_batch(s, "dense", 40, budget, 3);
  EXPECT_EQ(r.max_batch, 3);
  const ModelConfig& c = s.model.info.config;
  EXPECT_EQ(r.bytes_held, 3 * c.n_layers * c.n_kv_heads * ceil_div(40, kBlock) * block_bytes(c));
}

TEST(BenchBudget, ABudgetThatHoldsNoBlockIsAnError) {
  const BenchSetup s = tiny_setup();
  const ModelConfig& c = s.model.info.config;
  const int64_t one_block = c.n_layers * block_bytes(c);
  EXPECT_NO_THROW(s.cache_of_bytes("dense", one_block));
  try {
    largest_batch(s, "dense", 10, one_block - 1, 10);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("kv budget: " + std::to_string(one_block - 1) + " bytes hold no block"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace dms::eval
