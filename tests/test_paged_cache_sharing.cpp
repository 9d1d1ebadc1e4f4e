// Forked sequences (PagedKVCache::fork_sequence) share their parent's blocks and copy one only
// when they write into it. Checked three ways: a fork attends exactly as a sequence that ran the
// same history on its own, for every policy; thousands of random fork / step / finish / preempt
// operations keep every block's holders equal to a reference count re-derived from the block
// tables (no block leaked or freed twice) while each sequence's attention matches the dense
// reference over its own history; and the memory accounting counts a shared block once.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>
#include <string>

#include "paged_cache_reference.h"

namespace dms::test {
namespace {

constexpr double kTolerance = 2e-5;  // against the double reference, as in test_paged_cache.cpp

// Holders of every block of every layer, counted from the sequences' block tables, against the
// pools' own counts; and the byte accounting re-derived from the same tables.
void expect_holders_match_block_tables(const PagedKVCache& c, const std::string& where) {
  int64_t referenced = 0, distinct = 0;
  for (int64_t l = 0; l < c.n_layers(); ++l) {
    std::map<int32_t, int32_t> holders;
    for (SequenceId id : c.sequences())
      for (int64_t g = 0; g < c.n_kv_heads(); ++g) {
        std::set<int32_t> seen_in_head;
        for (int32_t b : c.head(id, l, g).blocks()) {
          ASSERT_TRUE(seen_in_head.insert(b).second) << where << ": a head holds block " << b << " twice";
          ++holders[b];
        }
      }
    const BlockPool& pool = c.pool(l);
    for (int32_t b = 0; b < pool.num_blocks(); ++b) {
      const auto it = holders.find(b);
      ASSERT_EQ(pool.holders(b), it == holders.end() ? 0 : it->second) << where << ": layer " << l << " block " << b;
    }
    ASSERT_EQ(pool.used_blocks(), static_cast<int64_t>(holders.size())) << where << ": layer " << l;
    for (const auto& [b, n] : holders) referenced += n;
    distinct += static_cast<int64_t>(holders.size());
  }
  const CacheStats s = c.stats();
  const int64_t block_bytes = c.pool(0).block_bytes();
  ASSERT_EQ(s.blocks_used, distinct) << where;
  ASSERT_EQ(s.bytes_held, distinct * block_bytes) << where;
  ASSERT_EQ(s.shared_bytes_saved, (referenced - distinct) * block_bytes) << where;
  const CacheFootprint f = c.footprint();
  ASSERT_EQ(f.bytes_held, distinct * block_bytes) << where;
  ASSERT_EQ(f.shared_bytes_saved, (referenced - distinct) * block_bytes) << where;
  ASSERT_EQ(f.dense_bytes, s.dense_bytes) << where;
}

PolicyOptions policy_options() {
  PolicyOptions o;
  o.dms.window = 5;
  o.budget.tokens = 12;
  o.sinks = 2;
  return o;
}

// Random q, k, v and logits for `rows` rows of one layer.
struct LayerInputs {
  at::Tensor q, k, v, logits;
};
LayerInputs random_inputs(const ModelConfig& shape, int64_t rows) {
  return {2 * at::randn({rows, shape.n_heads, shape.head_dim}), at::randn({rows, shape.n_kv_heads, shape.head_dim}),
          at::randn({rows, shape.n_kv_heads, shape.head_dim}), at::randn({rows, shape.n_kv_heads})};
}

// One step of `c` over sequences with the given inputs (rows in the order of `step`); returns
// each layer's attention output.
std::vector<at::Tensor> run_step(PagedKVCache& c, const std::vector<StepSequence>& step,
                                 const std::vector<LayerInputs>& in) {
  c.begin_step(step);
  std::vector<at::Tensor> out;
  for (int64_t l = 0; l < c.n_layers(); ++l) out.push_back(c.attend(l, in[l].q, in[l].k, in[l].v, in[l].logits));
  c.end_step();
  return out;
}

std::vector<LayerInputs> inputs_for(const ModelConfig& shape, int64_t rows) {
  std::vector<LayerInputs> in;
  for (int64_t l = 0; l < shape.n_layers; ++l) in.push_back(random_inputs(shape, rows));
  return in;
}

// Rows [row0, row0 + n) of every layer's inputs.
std::vector<LayerInputs> rows_of(const std::vector<LayerInputs>& in, int64_t row0, int64_t n) {
  std::vector<LayerInputs> out;
  for (const auto& x : in)
    out.push_back({x.q.narrow(0, row0, n), x.k.narrow(0, row0, n), x.v.narrow(0, row0, n), x.logits.narrow(0, row0, n)});
  return out;
}

// A parent prefills 90 tokens and is forked twice; the three then decode and prefill different
// tokens together. Each must attend, bit for bit, as a sequence of its own in another cache fed
// the same history (the kernel cuts a sequence's keys the same way in any batch), and keep the
// same keys.
TEST(PagedCacheSharing, AForkAttendsExactlyAsTheSameHistoryRunAlone) {
  const ModelConfig shape = attention_config(2, 2, 2, 16);
  for (const std::string& name : policy_names()) {
    SCOPED_TRACE(name);
    at::manual_seed(7);
    const PagedCacheOptions options{at::kFloat, 4, 256};
    PagedKVCache shared(shape, options, make_policy(name, policy_options()));
    PagedKVCache alone(shape, options, make_policy(name, policy_options()));
    const SequenceId p = shared.add_sequence();
    std::vector<SequenceId> own = {alone.add_sequence(), alone.add_sequence(), alone.add_sequence()};
    const auto prompt = inputs_for(shape, 90);
    run_step(shared, {{p, 90}}, prompt);
    for (SequenceId s : own) run_step(alone, {{s, 90}}, prompt);
    const CacheStats before = shared.stats();
    const std::vector<SequenceId> forks = {p, shared.fork_sequence(p), shared.fork_sequence(p)};
    expect_holders_match_block_tables(shared, "after the forks");
    EXPECT_EQ(shared.stats().bytes_held, before.bytes_held) << "a fork takes no new block";
    EXPECT_EQ(shared.stats().shared_bytes_saved, 2 * before.bytes_held);

    for (int round = 0; round < 24; ++round) {
      // Mostly decode steps, now and then a chunk, different for each sequence.
      std::vector<int64_t> n = {1, round % 5 == 2 ? 6 : 1, round % 7 == 3 ? 3 : 1};
      std::vector<StepSequence> fs, os;
      for (int i = 0; i < 3; ++i) {
        fs.push_back({forks[i], n[i]});
        os.push_back({own[i], n[i]});
      }
      const auto in = inputs_for(shape, n[0] + n[1] + n[2]);
      const auto together = run_step(shared, fs, in);
      int64_t row = 0;
      for (int i = 0; i < 3; ++i) {
        const auto apart = run_step(alone, {os[i]}, rows_of(in, row, n[i]));
        for (int64_t l = 0; l < shape.n_layers; ++l)
          ASSERT_TRUE(at::equal(together[l].narrow(0, row, n[i]), apart[l])) << "round " << round << " sequence " << i;
        row += n[i];
      }
      expect_holders_match_block_tables(shared, "round " + std::to_string(round));
    }
    for (int i = 0; i < 3; ++i)
      for (int64_t l = 0; l < shape.n_layers; ++l)
        for (int64_t g = 0; g < shape.n_kv_heads; ++g)
          EXPECT_EQ(shared.live_positions(forks[i], l, g), alone.live_positions(own[i], l, g));
    for (SequenceId s : forks) shared.remove_sequence(s);
    expect_holders_match_block_tables(shared, "after removing them");
    EXPECT_EQ(shared.stats().blocks_used, 0);
  }
}

// Thousands of random operations on a small pool: add, fork (of forks too), steps of random
// sizes, finish, and preempt when the pools are short. After each one the holders match the
// block tables; every step's attention matches the dense reference over each sequence's own
// history, so a write into a shared block never shows in another sequence.
TEST(PagedCacheSharing, RandomForksStepsAndRemovalsKeepEveryBlockAccountedFor) {
  const ModelConfig shape = attention_config(2, 2, 2, 8);
  DmsDriver d(shape, {at::kFloat, 4, 96}, 6, 0.5, 23);
  std::mt19937_64 rng(5);
  auto pick = [&](const std::vector<SequenceId>& ids) { return ids[rng() % ids.size()]; };
  int64_t forks = 0, steps = 0, preempted = 0, finished = 0;
  for (int op = 0; op < 3000; ++op) {
    std::vector<SequenceId> ids = d.cache().sequences();
    const int kind = static_cast<int>(rng() % 10);
    if (ids.empty() || (kind == 0 && ids.size() < 6)) {
      d.add();
    } else if (kind <= 2 && ids.size() < 8) {
      d.fork(pick(ids));
      ++forks;
    } else if (kind == 3 || d.cache().tokens_seen(ids.front()) > 80) {
      d.remove(kind == 3 ? pick(ids) : ids.front());
      ++finished;
    } else {
      std::shuffle(ids.begin(), ids.end(), rng);
      std::vector<StepSequence> step;
      for (size_t i = 0; i < ids.size() && i < 4; ++i)
        step.push_back({ids[i], rng() % 4 == 0 ? 1 + static_cast<int64_t>(rng() % 7) : 1});
      while (!step.empty() && d.cache().blocks_short(step) > 0) {  // preempt the last until it fits
        d.remove(step.back().id);
        step.pop_back();
        ++preempted;
      }
      if (step.empty()) continue;
      ASSERT_LE(d.step(step), kTolerance) << "op " << op;
      ++steps;
    }
    expect_holders_match_block_tables(d.cache(), "op " + std::to_string(op));
  }
  EXPECT_GT(forks, 300);
  EXPECT_GT(steps, 1000);
  EXPECT_GT(preempted, 0) << "the pool was meant to run short now and then";
  EXPECT_GT(finished, 100);
  for (SequenceId id : d.cache().sequences()) d.remove(id);
  for (int64_t l = 0; l < shape.n_layers; ++l) EXPECT_EQ(d.cache().pool(l).used_blocks(), 0);
}

TEST(PagedCacheSharing, ForkingIsRefusedDuringAStepAndForAnUnknownSequence) {
  const ModelConfig shape = attention_config(1, 1, 1, 8);
  PagedKVCache c(shape, PagedCacheOptions{at::kFloat, 4, 8}, make_dense_policy());
  const SequenceId a = c.add_sequence();
  EXPECT_THROW(c.fork_sequence(a + 1), Error);
  c.begin_step({{a, 2}});
  EXPECT_THROW(c.fork_sequence(a), Error);
  c.abort_step();
  EXPECT_EQ(c.sequences().size(), 1u);
}

}  // namespace
}  // namespace dms::test
