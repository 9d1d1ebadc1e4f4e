// What the paged cache holds: after every step each (sequence, layer, KV head) stores exactly
// the keys dms-spec section 2 leaves (the window plus unflagged older keys) in
// ceil(live / block size) blocks, never more than its live keys plus one block; the pools'
// own counters agree; the accounting is what the keys say; removing a sequence returns every
// block. The expected live sets come from the driver's decision logits (paged_cache_reference.h).
#include <gtest/gtest.h>

#include <cmath>

#include "paged_cache_reference.h"

namespace dms::test {
namespace {

constexpr double kTolerance = 2e-5;  // as in test_paged_cache.cpp

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Live sets, block bounds and pool counters for every head of `ids`; returns the flagged keys
// the logits imply (key j < last is flagged iff the logit of token j+1 is positive).
int64_t check_heads(DmsDriver& d, const std::vector<SequenceId>& ids) {
  PagedKVCache& c = d.cache();
  const int64_t B = c.options().block_size;
  int64_t flagged = 0;
  for (int64_t l = 0; l < c.n_layers(); ++l) {
    int64_t blocks = 0, bound = 0;
    for (SequenceId id : ids) {
      const at::Tensor logits = d.logits(id, l);
      const int64_t last = c.tokens_seen(id) - 1;
      for (int64_t g = 0; g < c.n_kv_heads(); ++g) {
        const HeadCache& h = c.head(id, l, g);
        EXPECT_EQ(c.live_positions(id, l, g), dms_expected_live(logits.select(1, g), last, d.window()))
            << "sequence " << id << " layer " << l << " head " << g;
        EXPECT_EQ(static_cast<int64_t>(h.blocks().size()), ceil_div(h.live(), B));
        blocks += static_cast<int64_t>(h.blocks().size());
        bound += h.live() + B;
        flagged += (logits.select(1, g).narrow(0, 1, last) > 0).sum().item<int64_t>();
      }
    }
    EXPECT_EQ(c.pool(l).used_blocks(), blocks) << "layer " << l;
    EXPECT_LE(c.pool(l).used_blocks() * B, bound) << "layer " << l;
  }
  return flagged;
}

TEST(PagedCacheMemory, DecodeHoldsLiveKeysPlusAtMostOneBlock) {
  // Bytes of one stored row of 16 values: f32, and q8 (16 levels and one fp16 scale).
  const std::pair<at::ScalarType, int64_t> dtypes[] = {{at::kFloat, 64}, {at::kChar, 18}};
  for (double f : {0.5, 7.0 / 8.0})
    for (int64_t block : {16, 5})
      for (const auto& [dtype, row_bytes] : dtypes) {
        SCOPED_TRACE("flagged share " + std::to_string(f) + ", block " + std::to_string(block) + ", " +
                     c10::toString(dtype));
        const int64_t window = 16, steps = 400;
        DmsDriver d(attention_config(2, 2, 2, 16), {dtype, block, 4096}, window, f, 21);
        std::vector<SequenceId> ids{d.add(), d.add(), d.add()};
        ASSERT_LE(d.step({{ids[0], 1}, {ids[1], 2}, {ids[2], 3}}), kTolerance);
        for (int64_t s = 0; s < steps; ++s) {
          ASSERT_LE(d.step({{ids[0], 1}, {ids[1], 1}, {ids[2], 1}}), kTolerance);
          if (s % 25 == 0 || s == steps - 1) check_heads(d, ids);
        }
        const int64_t flagged = check_heads(d, ids);

        // Accounting against the keys themselves.
        const PagedKVCache& c = d.cache();
        const int64_t heads = c.n_layers() * c.n_kv_heads();
        CacheStats st = c.stats();
        int64_t seen = 0, live = 0, blocks = 0;
        double ratio = 0;
        for (SequenceId id : ids) {
          seen += c.tokens_seen(id);
          const SequenceStats ss = c.sequence_stats(id);
          int64_t seq_live = 0, seq_blocks = 0;
          double seq_ratio = 0;
          for (int64_t l = 0; l < c.n_layers(); ++l)
            for (int64_t g = 0; g < c.n_kv_heads(); ++g) {
              const HeadCache& h = c.head(id, l, g);
              seq_live += h.live();
              seq_blocks += static_cast<int64_t>(h.blocks().size());
              seq_ratio += static_cast<double>(c.tokens_seen(id)) / static_cast<double>(h.live()) / heads;
            }
          EXPECT_EQ(ss.live_slots, seq_live);
          EXPECT_EQ(ss.blocks, seq_blocks);
          EXPECT_EQ(ss.bytes_held, seq_blocks * block * row_bytes * 2);
          EXPECT_EQ(ss.dense_bytes, c.tokens_seen(id) * heads * row_bytes * 2);
          EXPECT_NEAR(ss.compression_ratio, seq_ratio, 1e-9);
          EXPECT_NEAR(ss.memory_ratio, static_cast<double>(c.tokens_seen(id) * heads) / static_cast<double>(seq_live), 1e-9);
          live += seq_live;
          blocks += seq_blocks;
          ratio += seq_ratio / static_cast<double>(ids.size());
        }
        EXPECT_EQ(st.tokens_seen, seen);
        EXPECT_EQ(st.live_slots, live);
        EXPECT_EQ(st.blocks_used, blocks);
        EXPECT_NEAR(st.compression_ratio, ratio, 1e-9);
        EXPECT_NEAR(st.eviction_fraction, static_cast<double>(flagged) / static_cast<double>(seen * heads), 1e-12);
        EXPECT_LT(st.bytes_held, st.dense_bytes);
        // With the window always kept, about window + (1 - f) * (seen - window) keys stay.
        const double expected_live = window + (1 - f) * (seen / 3.0 - window);
        EXPECT_NEAR(static_cast<double>(live) / (3.0 * heads), expected_live, 0.15 * expected_live);

        // Removing a sequence gives back exactly its blocks; the last removal empties the pools.
        for (SequenceId id : ids) {
          std::vector<int64_t> used_before, held(c.n_layers(), 0);
          for (int64_t l = 0; l < c.n_layers(); ++l) {
            used_before.push_back(c.pool(l).used_blocks());
            for (int64_t g = 0; g < c.n_kv_heads(); ++g) held[l] += static_cast<int64_t>(c.head(id, l, g).blocks().size());
          }
          d.remove(id);
          for (int64_t l = 0; l < c.n_layers(); ++l) EXPECT_EQ(c.pool(l).used_blocks(), used_before[l] - held[l]);
        }
        for (const PoolStats& p : d.cache().stats().pools) {
          EXPECT_EQ(p.used, 0);
          EXPECT_EQ(p.free, p.blocks);
          EXPECT_GT(p.peak_used, 0);
        }
      }
}

// A prompt longer than the window is itself compressed: keys flagged and older than the window
// when the chunk ends are never stored, so even the pools' peak stays at the kept keys.
TEST(PagedCacheMemory, PromptLongerThanWindowIsCompressedBeforeDecoding) {
  const int64_t window = 16, block = 16;
  DmsDriver d(attention_config(2, 2, 2, 16), {at::kFloat, block, 4096}, window, 1.0, 23);
  const SequenceId id = d.add();
  ASSERT_LE(d.step({{id, 300}}), kTolerance);
  check_heads(d, {id});
  for (int64_t l = 0; l < 2; ++l) {
    // Query 300 sees keys 284..299: the window's 16.
    for (int64_t g = 0; g < 2; ++g) EXPECT_EQ(d.cache().head(id, l, g).live(), window);
    EXPECT_EQ(d.cache().pool(l).peak_used_blocks(), 2 * ceil_div(window, block));
  }

  // In random chunks, with some keys kept.
  DmsDriver chunked(attention_config(2, 2, 2, 16), {at::kFloat, block, 4096}, window, 0.75, 24);
  const SequenceId c = chunked.add();
  for (int64_t n : {37, 1, 90, 16, 56, 100}) ASSERT_LE(chunked.step({{c, n}}), kTolerance);
  check_heads(chunked, {c});
  for (int s = 0; s < 20; ++s) ASSERT_LE(chunked.step({{c, 1}}), kTolerance);
  check_heads(chunked, {c});
}

TEST(PagedCacheMemory, PromptShorterThanOneBlock) {
  DmsDriver d(attention_config(2, 2, 3, 16), {at::kFloat, 16, 64}, 8, 0.5, 25);
  const SequenceId id = d.add();
  ASSERT_LE(d.step({{id, 3}}), kTolerance);
  check_heads(d, {id});
  for (int64_t l = 0; l < 2; ++l) EXPECT_EQ(d.cache().pool(l).used_blocks(), 2);  // one per KV head
  for (int s = 0; s < 4; ++s) ASSERT_LE(d.step({{id, 1}}), kTolerance);
  check_heads(d, {id});
}

}  // namespace
}  // namespace dms::test
