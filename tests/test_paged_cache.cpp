// The paged cache with DMS eviction against plain dense attention under the visibility rule of
// dms-spec section 2, written independently in the test (paged_cache_reference.h, in double).
//
// Random shapes (GQA groups 1-8, head dims with and without a multiple of 8), windows 1-64,
// block sizes that do and do not divide the window, several sequences of different lengths
// in one step, joining and leaving, chunked prefill with chunks of random sizes (small ones
// take the tiled kernel, from 16 queries the BLAS one) and decode.
//
// Tolerance: max |ours - reference| <= 2e-5 * max(1, max |reference|). The kernel sums in fp32
// (online softmax, blocks in a different order than the reference's one dense row); the
// largest error measured over these tests is below 2e-6, while a key seen one query too long
// or too short, or a misplaced slot, moves the output by 1e-2 or more. bf16 and f16 KV are
// compared with the same bound against a reference fed the same keys and values rounded to
// that dtype: the cache rounds them exactly as the reference does, so only fp32 summation
// order separates the two.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <set>
#include <string>

#include "paged_cache_reference.h"

namespace dms::test {
namespace {

constexpr double kTolerance = 2e-5;

struct Trial {
  int64_t n_kv, group, head_dim, window, block_size;
  double flag_fraction;
  at::ScalarType dtype;
  std::string describe() const {
    return "kv heads " + std::to_string(n_kv) + ", group " + std::to_string(group) + ", D " +
           std::to_string(head_dim) + ", window " + std::to_string(window) + ", block " +
           std::to_string(block_size) + ", flagged " + std::to_string(flag_fraction) + ", " + c10::toString(dtype);
  }
};

// Sequences join, prefill in random chunks, decode, and leave; every step is checked.
void run_schedule(const Trial& trial, uint64_t seed, int64_t steps, int64_t max_chunk) {
  SCOPED_TRACE(trial.describe());
  std::mt19937_64 rng(seed);
  const PagedCacheOptions options{trial.dtype, trial.block_size, 4096};
  DmsDriver driver(attention_config(2, trial.n_kv, trial.group, trial.head_dim), options, trial.window,
                   trial.flag_fraction, seed);
  std::vector<SequenceId> active;
  std::vector<int64_t> prompt_left;  // prompt tokens still to prefill, per active sequence
  for (int64_t s = 0; s < steps; ++s) {
    if (active.empty() || (active.size() < 4 && rng() % 4 == 0)) {
      active.push_back(driver.add());
      prompt_left.push_back(1 + static_cast<int64_t>(rng() % 120));
    }
    std::vector<StepSequence> step;
    for (size_t i = 0; i < active.size(); ++i) {
      int64_t n = 1;
      if (prompt_left[i] > 0) {
        n = std::min<int64_t>(prompt_left[i], 1 + static_cast<int64_t>(rng() % max_chunk));
        prompt_left[i] -= n;
      }
      step.push_back({active[i], n});
    }
    const double err = driver.step(step);
    ASSERT_LE(err, kTolerance) << "step " << s;
    if (active.size() > 1 && rng() % 8 == 0) {  // a sequence ends mid-batch
      const size_t i = rng() % active.size();
      driver.remove(active[i]);
      active.erase(active.begin() + static_cast<int64_t>(i));
      prompt_left.erase(prompt_left.begin() + static_cast<int64_t>(i));
    }
  }
}

TEST(PagedCacheExactness, RandomShapesWindowsBlocksAndSchedules) {
  std::mt19937_64 rng(7);
  const int64_t dims[] = {4, 16, 20, 64};
  const int64_t kv_heads[] = {1, 2, 3};
  const double fractions[] = {0.0, 0.3, 0.7, 1.0};
  std::set<bool> divides_seen;
  for (int trial_index = 0; trial_index < 16; ++trial_index) {
    Trial t;
    t.group = 1 + trial_index % 8;
    t.n_kv = kv_heads[rng() % 3];
    t.head_dim = dims[rng() % 4];
    t.window = trial_index == 0 ? 1 : trial_index == 1 ? 64 : 1 + static_cast<int64_t>(rng() % 64);
    // Even trials: a block size that divides the window; odd ones: one that does not.
    std::vector<int64_t> candidates;
    for (int64_t b = 1; b <= 40; ++b)
      if ((t.window % b == 0) == (trial_index % 2 == 0)) candidates.push_back(b);
    if (candidates.empty()) candidates.push_back(t.window + 1);  // a window of 1 or 2: every b <= it divides
    t.block_size = candidates[rng() % candidates.size()];
    divides_seen.insert(t.window % t.block_size == 0);
    t.flag_fraction = fractions[rng() % 4];
    t.dtype = at::kFloat;
    run_schedule(t, 100 + trial_index, 40, 40);
  }
  EXPECT_EQ(divides_seen.size(), 2u) << "block sizes that divide the window and ones that do not";
}

TEST(PagedCacheExactness, Bf16AndF16Keys) {
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    run_schedule({2, 4, 64, 16, 16, 0.6, dtype}, 11, 30, 40);
    run_schedule({1, 3, 20, 5, 3, 0.9, dtype}, 12, 30, 40);
  }
}

// q8 keys and values: the cache attends over exactly the values it stored, so against a
// reference fed the same values quantized by the rule (stored_values, re-derived in the test)
// the fp32 bound holds. GQA groups 1-8, head dims with one scale per row (20) and per 32, random
// windows and block sizes, chunked prefill (BLAS and tiled) and decode.
TEST(PagedCacheExactness, Q8KeysAgainstTheirStoredValues) {
  std::mt19937_64 rng(31);
  const int64_t dims[] = {20, 32, 64, 128};
  for (int trial = 0; trial < 8; ++trial) {
    const Trial t{1 + trial % 3, 1 + trial, dims[trial % 4], 1 + static_cast<int64_t>(rng() % 40),
                  1 + static_cast<int64_t>(rng() % 20), 0.1 * trial, at::kChar};
    run_schedule(t, 300 + trial, 30, 40);
  }
}

// Against the unquantized values. Tolerance from the quantization step: a value of a group with
// max |x| = m moves by at most m / 254; for these inputs (unit normals, m <= 4.5 over 32 values)
// that is 0.018 for a value and, summed over D products with the queries (2 x unit normals,
// errors of random sign), about 0.02 for a scaled score, which moves the output by a similar
// fraction of |v|: 0.05 of max |ref| bounds both with room. A key one query too long or a wrong
// scale moves it by 0.1 or more.
TEST(PagedCacheExactness, Q8AgainstUnquantizedValues) {
  constexpr double kQ8Tolerance = 0.05;
  for (int64_t D : {64, 128}) {
    DmsDriver driver(attention_config(2, 2, 4, D), {at::kChar, 16, 4096}, 32, 0.5, 41);
    driver.reference_dtype = at::kFloat;
    const SequenceId a = driver.add(), b = driver.add();
    double worst = 0;
    for (int64_t done = 0; done < 120; done += 40) worst = std::max(worst, driver.step({{a, 40}, {b, 7}}));
    for (int s = 0; s < 30; ++s) worst = std::max(worst, driver.step({{a, 1}, {b, 1}}));
    EXPECT_LE(worst, kQ8Tolerance) << "head dim " << D;
    std::printf("q8 against fp32 values, head dim %lld: worst relative error %.4f\n", static_cast<long long>(D), worst);
  }
}

// One long sequence decoding with small blocks: its single (sequence, KV head) item is split
// across threads and merged.
TEST(PagedCacheExactness, LongDecodeSplitOverThreads) {
  DmsDriver driver(attention_config(1, 1, 3, 64), {at::kFloat, 4, 4096}, 48, 0.2, 3);
  const SequenceId id = driver.add();
  for (int64_t done = 0; done < 700; done += 100) ASSERT_LE(driver.step({{id, 100}}), kTolerance);
  for (int s = 0; s < 20; ++s) ASSERT_LE(driver.step({{id, 1}}), kTolerance);
}

// A whole prompt in one step: every query of the prompt sees what the rule says inside it.
TEST(PagedCacheExactness, WholePromptInOneStep) {
  for (int64_t window : {1, 7, 64}) {
    DmsDriver driver(attention_config(2, 2, 2, 16), {at::kFloat, 16, 4096}, window, 0.5, 5);
    const SequenceId a = driver.add(), b = driver.add();
    ASSERT_LE(driver.step({{a, 300}, {b, 5}}), kTolerance);
    for (int s = 0; s < 10; ++s) ASSERT_LE(driver.step({{a, 1}, {b, 1}}), kTolerance);
  }
}

TEST(PagedCacheExactness, BatchOfOneAndOfSixtyFour) {
  std::mt19937_64 rng(9);
  for (int64_t batch : {1, 64}) {
    DmsDriver driver(attention_config(2, 2, 4, 32), {at::kFloat, 16, 8192}, 16, 0.5, 13);
    std::vector<SequenceId> ids;
    std::vector<StepSequence> prefill, decode;
    for (int64_t i = 0; i < batch; ++i) {
      ids.push_back(driver.add());
      prefill.push_back({ids.back(), 1 + static_cast<int64_t>(rng() % 60)});
      decode.push_back({ids.back(), 1});
    }
    ASSERT_LE(driver.step(prefill), kTolerance) << "batch " << batch;
    for (int s = 0; s < 6; ++s) ASSERT_LE(driver.step(decode), kTolerance) << "batch " << batch;
  }
}

// With every decision logit negative nothing is evicted and the
// output is plain causal attention.
TEST(PagedCacheExactness, NoFlagsIsCausalAttention) {
  DmsDriver driver(attention_config(1, 2, 2, 16), {at::kFloat, 8, 1024}, 4, 0.0, 17);
  const SequenceId id = driver.add();
  driver.step({{id, 40}});
  for (int s = 0; s < 5; ++s) driver.step({{id, 1}});
  EXPECT_LE(driver.worst_error(), kTolerance);
  EXPECT_EQ(driver.cache().head(id, 0, 0).live(), 45);
  EXPECT_EQ(driver.cache().stats().eviction_fraction, 0.0);
}

}  // namespace
}  // namespace dms::test
