// The paged cache under pressure and misuse: running out of blocks is refused with CacheFull
// before anything changes and later steps are fine; a failed forward can be abandoned; every
// misuse is a dms::Error that says what is wrong. Outputs are checked against the dense
// reference (paged_cache_reference.h) before and after each incident.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "paged_cache_reference.h"

namespace dms::test {
namespace {

constexpr double kTolerance = 2e-5;  // as in test_paged_cache.cpp

// The message of the dms::Error `f` throws ("" if none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Everything the cache reports about its sequences and pools.
std::string snapshot(const PagedKVCache& c) {
  std::string s;
  for (SequenceId id : c.sequences()) {
    s += "seq " + std::to_string(id) + " seen " + std::to_string(c.tokens_seen(id)) + ":";
    for (int64_t l = 0; l < c.n_layers(); ++l)
      for (int64_t g = 0; g < c.n_kv_heads(); ++g) {
        for (int32_t p : c.live_positions(id, l, g)) s += " " + std::to_string(p);
        s += " |" + std::to_string(c.head(id, l, g).blocks().size()) + "|";
      }
  }
  for (const PoolStats& p : c.stats().pools) s += " pool " + std::to_string(p.used) + "/" + std::to_string(p.free);
  return s + (c.in_step() ? " in step" : "");
}

TEST(PagedCacheRobustness, RunningOutOfBlocksIsRefusedBeforeAnythingChanges) {
  // No key is ever flagged, so each head needs ceil(tokens / 4) blocks; 12 blocks per layer
  // hold two sequences of 12 tokens (3 blocks x 2 KV heads each).
  DmsDriver d(attention_config(2, 2, 2, 16), {at::kFloat, 4, 12}, 8, 0.0, 31);
  const SequenceId a = d.add(), b = d.add();
  ASSERT_LE(d.step({{a, 10}, {b, 10}}), kTolerance);
  ASSERT_LE(d.step({{a, 2}, {b, 2}}), kTolerance);
  for (int64_t l = 0; l < 2; ++l) EXPECT_EQ(d.cache().pool(l).free_blocks(), 0);

  const std::string before = snapshot(d.cache());
  const std::vector<StepSequence> next{{a, 1}, {b, 1}};
  EXPECT_EQ(d.cache().blocks_short(next), 4);
  try {
    d.cache().begin_step(next);
    FAIL() << "a step the pools cannot hold was accepted";
  } catch (const CacheFull& e) {
    EXPECT_NE(std::string(e.what()).find("more blocks in layer 0"), std::string::npos) << e.what();
  }
  EXPECT_EQ(snapshot(d.cache()), before);

  // Nor can a prefill chunk of one of them.
  EXPECT_THROW(d.cache().begin_step({{a, 5}}), CacheFull);
  EXPECT_EQ(snapshot(d.cache()), before);

  // Preempt b: its blocks come back and a carries on, still exact.
  d.remove(b);
  EXPECT_EQ(d.cache().blocks_short({{a, 1}}), 0);
  for (int s = 0; s < 4; ++s) ASSERT_LE(d.step({{a, 1}}), kTolerance);
  const SequenceId c = d.add();  // a's 17 keys and c's 3 fill the pools exactly
  ASSERT_LE(d.step({{a, 1}, {c, 3}}), kTolerance);
}

TEST(PagedCacheRobustness, AbortedStepLeavesTheCacheAsItWas) {
  DmsDriver d(attention_config(2, 2, 2, 16), {at::kFloat, 4, 64}, 4, 0.5, 33);
  const SequenceId a = d.add(), b = d.add();
  ASSERT_LE(d.step({{a, 9}, {b, 3}}), kTolerance);
  const std::string before = snapshot(d.cache());

  PagedKVCache& c = d.cache();
  c.begin_step({{a, 2}, {b, 1}});
  const auto in = d.inputs(3);
  c.attend(0, in.q, in.k, in.v, in.logits);  // layer 1 never runs: the forward failed
  EXPECT_NE(error_of([&] { c.end_step(); }).find("layer 1 was not attended"), std::string::npos);
  c.abort_step();
  EXPECT_EQ(snapshot(c), before);
  for (int s = 0; s < 6; ++s) ASSERT_LE(d.step({{a, 1}, {b, 2}}), kTolerance);
}

TEST(PagedCacheRobustness, MisuseIsAClearError) {
  DmsDriver d(attention_config(2, 2, 2, 16), {at::kFloat, 4, 64}, 4, 0.5, 35);
  PagedKVCache& c = d.cache();
  const SequenceId a = d.add();
  auto has = [](const std::string& message, const std::string& part) {
    return message.find(part) != std::string::npos;
  };
  EXPECT_TRUE(has(error_of([&] { c.begin_step({{a + 100, 1}}); }), "no sequence"));
  EXPECT_TRUE(has(error_of([&] { c.begin_step({{a, 1}, {a, 2}}); }), "appears twice"));
  EXPECT_TRUE(has(error_of([&] { c.begin_step({{a, 0}}); }), "has 0 tokens"));
  EXPECT_TRUE(has(error_of([&] { c.begin_step({}); }), "no sequences"));
  const auto in = d.inputs(2);
  EXPECT_TRUE(has(error_of([&] { c.attend(0, in.q, in.k, in.v, in.logits); }), "outside a step"));
  EXPECT_TRUE(has(error_of([&] { c.end_step(); }), "without begin_step"));
  EXPECT_TRUE(has(error_of([&] { c.remove_sequence(a + 100); }), "no sequence"));

  c.begin_step({{a, 2}});
  EXPECT_TRUE(has(error_of([&] { c.begin_step({{a, 1}}); }), "previous step is open"));
  EXPECT_TRUE(has(error_of([&] { c.remove_sequence(a); }), "during a step"));
  EXPECT_TRUE(has(error_of([&] { c.attend(2, in.q, in.k, in.v, in.logits); }), "layer 2 out of range"));
  EXPECT_TRUE(has(error_of([&] { c.attend(0, in.q.narrow(0, 0, 1), in.k, in.v, in.logits); }), "expected q [2, 4, 16]"));
  EXPECT_TRUE(has(error_of([&] { c.attend(0, in.q, in.k, in.v, in.logits.narrow(1, 0, 1)); }),
                  "expected evict_logits [2, 2]"));
  // DMS without decision logits (a model without decision heads) and no forced fraction.
  EXPECT_TRUE(has(error_of([&] { c.attend(0, in.q, in.k, in.v, at::Tensor()); }), "no decision heads"));
  c.attend(0, in.q, in.k, in.v, in.logits);
  EXPECT_TRUE(has(error_of([&] { c.attend(0, in.q, in.k, in.v, in.logits); }), "twice in one step"));
  c.abort_step();
  EXPECT_EQ(c.tokens_seen(a), 0);

  const ModelConfig shape = attention_config(1, 2, 2, 16);
  EXPECT_TRUE(has(error_of([&] { PagedKVCache(shape, {at::kFloat, 16, 0}, make_dense_policy()); }),
                  "between 1 and 2^31-1 blocks"));
  EXPECT_TRUE(has(error_of([&] { PagedKVCache(shape, {at::kDouble, 16, 8}, make_dense_policy()); }),
                  "f32, bf16, f16 or q8"));
  EXPECT_TRUE(has(error_of([&] { PagedKVCache(shape, {at::kFloat, 0, 8}, make_dense_policy()); }), "block size"));
  EXPECT_TRUE(has(error_of([&] { PagedKVCache(shape, {at::kFloat, 16, 8}, nullptr); }), "no eviction policy"));
}

}  // namespace
}  // namespace dms::test
