// PagedKVCache::store (keys recorded without attention) leaves the cache exactly as attend
// does: the same live keys per head, and later queries see the same attention.
#include <gtest/gtest.h>

#include <random>

#include "paged_cache_reference.h"

namespace dms::test {
namespace {

TEST(PagedCacheStore, StoreKeepsWhatAttendKeeps) {
  const ModelConfig shape = attention_config(2, 2, 3, 16);
  const int64_t window = 6;
  const PagedCacheOptions options{at::kFloat, 4, 256};
  PagedKVCache attended(shape, options, make_dms_policy({.window = window}));
  PagedKVCache stored(shape, options, make_dms_policy({.window = window}));
  const SequenceId a = attended.add_sequence(), s = stored.add_sequence();
  ASSERT_EQ(a, s);
  std::mt19937_64 rng(11);
  at::manual_seed(11);
  for (int step = 0; step < 12; ++step) {
    const int64_t T = 1 + static_cast<int64_t>(rng() % 9);
    attended.begin_step({{a, T}});
    stored.begin_step({{s, T}});
    for (int64_t l = 0; l < shape.n_layers; ++l) {
      const auto q = at::randn({T, shape.n_heads, shape.head_dim});
      const auto k = at::randn({T, shape.n_kv_heads, shape.head_dim});
      const auto v = at::randn({T, shape.n_kv_heads, shape.head_dim});
      const auto logits = at::randn({T, shape.n_kv_heads});
      attended.attend(l, q, k, v, logits);
      stored.store(l, k, v, logits);
    }
    attended.end_step();
    stored.end_step();
    for (int64_t l = 0; l < shape.n_layers; ++l)
      for (int64_t g = 0; g < shape.n_kv_heads; ++g)
        ASSERT_EQ(attended.live_positions(a, l, g), stored.live_positions(s, l, g)) << "step " << step << " layer " << l;
  }
  // Some keys were evicted, so the comparison above was not trivially all-kept.
  EXPECT_LT(attended.sequence_stats(a).live_slots, attended.tokens_seen(a) * shape.n_layers * shape.n_kv_heads);

  attended.begin_step({{a, 1}});
  stored.begin_step({{s, 1}});
  for (int64_t l = 0; l < shape.n_layers; ++l) {
    const auto q = at::randn({1, shape.n_heads, shape.head_dim});
    const auto k = at::randn({1, shape.n_kv_heads, shape.head_dim});
    const auto v = at::randn({1, shape.n_kv_heads, shape.head_dim});
    const auto logits = at::randn({1, shape.n_kv_heads});
    EXPECT_TRUE(at::equal(attended.attend(l, q, k, v, logits), stored.attend(l, q, k, v, logits)));
  }
}

TEST(PagedCacheStore, RejectsWrongShapesLikeAttend) {
  const ModelConfig shape = attention_config(1, 2, 2, 8);
  PagedKVCache cache(shape, PagedCacheOptions{at::kFloat, 4, 16}, make_dense_policy());
  const SequenceId id = cache.add_sequence();
  EXPECT_THROW(cache.store(0, at::randn({2, 2, 8}), at::randn({2, 2, 8}), at::Tensor()), Error);  // no step
  cache.begin_step({{id, 2}});
  EXPECT_THROW(cache.store(0, at::randn({3, 2, 8}), at::randn({2, 2, 8}), at::Tensor()), Error);
  cache.store(0, at::randn({2, 2, 8}), at::randn({2, 2, 8}), at::Tensor());
  cache.end_step();
  EXPECT_EQ(cache.tokens_seen(id), 2);
}

}  // namespace
}  // namespace dms::test
