// Shared pieces of the bench measurement tests: a setup on the tiny Llama of
// make_eval_fixtures.py (2 layers, 2 KV heads, head dim 16, DMS window 8) and the block
// arithmetic the tests re-derive their expectations with.
#pragma once
#include <cstdint>

#include "dms/eval/bench_setup.h"
#include "test_eval_fixtures.h"

namespace dms::eval::test_bench {

constexpr int64_t kBlock = 16;

// bf16 slots, blocks of kBlock, prefill in chunks of `chunk`; every policy's settings from `po`.
inline BenchSetup tiny_setup(const PolicyOptions& po = {}, int64_t chunk = 24, const std::string& model = "tiny") {
  return BenchSetup{test::eval_model(model), po, at::kBFloat16, kBlock, chunk};
}

// DMS flagging every key (forced fraction 1) or a share of them, with window `window`.
inline PolicyOptions forced_dms(double fraction, int64_t window = 8) {
  PolicyOptions po;
  po.dms = {window, fraction, 0};
  return po;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Bytes of one block of one KV head of one layer: K and V, kBlock slots of head dim 16, bf16.
inline int64_t block_bytes(const ModelConfig& c) { return 2 * kBlock * c.head_dim * 2; }

}  // namespace dms::eval::test_bench
