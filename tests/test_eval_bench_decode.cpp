// Decode and prefill measurements (bench_decode, bench_prefill) on the tiny Llama: what they
// report of each policy's cache against the block arithmetic and the policy's rule, a sample
// per timed step, and the weights a decode step reads against the checkpoint file.
#include <gtest/gtest.h>

#include "dms/eval/bench_decode.h"
#include "dms/eval/bench_prefill.h"
#include "dms/format/safetensors.h"
#include "test_eval_bench_helpers.h"

namespace dms::eval {
namespace {

using namespace test_bench;

TEST(BenchDecode, ReportsEachPolicysCacheAndEveryTimedStep) {
  const int64_t window = 8, context = 50, batch = 3, steps = 2, repeats = 3;
  const BenchSetup s = tiny_setup(forced_dms(1.0, window));
  const ModelConfig& c = s.model.info.config;
  const auto row = measure_decode(s, {"dense", "dms"}, context, batch, steps, repeats);
  ASSERT_EQ(row.size(), 2u);
  const int64_t heads = batch * c.n_layers * c.n_kv_heads;
  const int64_t dense_bytes = batch * context * c.kv_bytes_per_token(2);
  for (const DecodeResult& r : row) {
    EXPECT_EQ(r.context, context);
    EXPECT_EQ(r.batch, batch);
    EXPECT_EQ(r.dense_bytes, dense_bytes) << r.policy;
    ASSERT_EQ(r.step_ms.size(), static_cast<size_t>(steps * repeats)) << r.policy;
    for (double ms : r.step_ms) EXPECT_GT(ms, 0) << r.policy;
  }
  EXPECT_EQ(row[0].policy, "dense");
  EXPECT_EQ(row[0].live_slots, heads * context);
  EXPECT_EQ(row[0].kv_bytes, heads * ceil_div(context, kBlock) * block_bytes(c));
  EXPECT_EQ(row[0].compression_ratio, 1.0);
  // Every decided key flagged: the window's keys and the undecided newest one stay.
  EXPECT_EQ(row[1].policy, "dms");
  EXPECT_EQ(row[1].live_slots, heads * window);
  EXPECT_NEAR(row[1].compression_ratio, static_cast<double>(context) / window, 1e-12);
  EXPECT_EQ(s.live_kv_bytes("dms", row[1].live_slots), heads * window * 2 * c.head_dim * 2);
}

// "policy:dtype" measures that policy with its own KV dtype beside the others, side by side.
TEST(BenchDecode, PolicyNamesCarryTheirOwnKvDtype) {
  const int64_t window = 8, context = 50, batch = 2;
  const BenchSetup s = tiny_setup(forced_dms(1.0, window));
  const ModelConfig& c = s.model.info.config;
  const auto row = measure_decode(s, {"dms", "dms:q8", "dense:q8"}, context, batch, 1, 1);
  ASSERT_EQ(row.size(), 3u);
  EXPECT_EQ(row[1].policy, "dms:q8");
  EXPECT_EQ(row[1].live_slots, row[0].live_slots);  // the same keys kept, in fewer bytes
  // A q8 row: head_dim levels and an fp16 scale per 32 values (per row when 32 does not divide it).
  const int64_t q8_row = c.head_dim + 2 * (c.head_dim % 32 == 0 ? c.head_dim / 32 : 1);
  EXPECT_EQ(s.live_kv_bytes("dms:q8", row[1].live_slots), row[1].live_slots * 2 * q8_row);
  EXPECT_EQ(row[2].dense_bytes, batch * context * c.n_layers * c.n_kv_heads * 2 * q8_row);
  EXPECT_EQ(row[2].kv_bytes, batch * c.n_layers * c.n_kv_heads * ceil_div(context, kBlock) * kBlock * 2 * q8_row);
  EXPECT_THROW(s.spec("dms:q4"), Error);
  EXPECT_EQ(s.spec("dense").kv_dtype, at::kBFloat16);
}

// The tiny checkpoint is fp32, loaded as fp32, with the embedding tied to the output
// projection: a decode step reads every stored tensor once.
TEST(BenchDecode, WeightsReadPerStepAreTheCheckpointsTensors) {
  for (const std::string name : {"tiny_base", "tiny"}) {
    const auto file = SafetensorsFile::open(test::eval_fixture(name + "/model.safetensors"));
    int64_t stored = 0;
    for (const auto& [tensor, t] : file->tensors()) stored += static_cast<int64_t>(t.nbytes);
    EXPECT_EQ(decode_weight_bytes(test::eval_model(name).transformer->weights()), stored) << name;
  }
}

TEST(BenchPrefill, OneRatePerRepeatForEachPolicyInTurn) {
  const BenchSetup s = tiny_setup(forced_dms(0.5), 16);
  for (int64_t context : {16, 45}) {  // one chunk; chunks with a partial last
    const auto out = measure_prefill(s, {"dense", "dms"}, context, 3);
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out[0].policy, "dense");
    EXPECT_EQ(out[1].policy, "dms");
    for (const PrefillResult& p : out) {
      EXPECT_EQ(p.context, context);
      ASSERT_EQ(p.tokens_per_s.size(), 3u);
      for (double rate : p.tokens_per_s) EXPECT_GT(rate, 0) << p.policy;
    }
  }
  EXPECT_THROW(measure_prefill(s, {"dense"}, 0, 1), Error);
  EXPECT_THROW(measure_decode(s, {"dense"}, 8, 1, 0, 1), Error);
}

}  // namespace
}  // namespace dms::eval
