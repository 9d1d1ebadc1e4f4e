// DMS decision heads in our forward, run over the paged cache (the engine's path), against the
// reference DMS forward on transformers' Qwen3 (tests/reference/make_dms_fixtures.py): tiny
// random checkpoints in Mode A (laid out like the released Qwen3-8B-DMS-8x) and Mode B (per head
// and per layer), a 20-token prompt and 200 greedy tokens at window 16, so keys are flagged and
// dropped during the prompt and throughout the generation.
//
// Tolerances (fp32 on both sides; only the summation order differs):
//   logits           max |ours - ref| <= 1e-4 * max(1, max |ref|), as in test_model_forward.cpp;
//                    measured worst case 1.2e-6 of the largest logit.
//   decision logits  max |ours - ref| <= 3e-5 * max(1, max |ref|): a logit is 100 x a unit-scale
//                    activation; measured worst case 1.4e-6 of the largest logit (5e-4 in
//                    absolute terms). Their signs, which decide evictions, must agree everywhere
//                    (the generator keeps every |logit| above 1e-2).
//   queries          max |ours - ref| <= 3e-5 * max(1, max |ref|), measured 1.3e-6; the channels
//                    Mode A borrows must be exactly 0.
// A wrongly shifted decision, a missing zeroing, the wrong head or a window off by one moves
// logits by far more (the generator checks that eviction changes the logits by over 0.1).
#include <gtest/gtest.h>

#include "test_dms_model_fixtures.h"
#include "test_model_fixtures.h"

namespace dms::test {
namespace {

constexpr double kLogitRel = 1e-4;
constexpr double kDecisionRel = 3e-5;
constexpr double kQueryRel = 3e-5;

// After the last step, before query N (the tokens seen), each (layer, KV head) holds exactly the
// keys the reference's decisions leave visible: key j unless the logit at j + 1 flagged it and
// N - j > window.
void expect_cache_keeps_what_the_reference_decided(const PagedSequence& seq, const at::Tensor& decisions,
                                                   int64_t window, const std::string& what) {
  const int64_t L = decisions.size(0), N = decisions.size(1), n_kv = decisions.size(2);
  ASSERT_EQ(seq.cache().tokens_seen(seq.id()), N);
  const auto d = decisions.accessor<float, 3>();
  for (int64_t l = 0; l < L; ++l) {
    for (int64_t g = 0; g < n_kv; ++g) {
      std::vector<int32_t> expected;
      for (int64_t j = 0; j < N; ++j)
        if (j + 1 == N || d[l][j + 1][g] <= 0 || N - j <= window) expected.push_back(static_cast<int32_t>(j));
      EXPECT_EQ(seq.cache().live_positions(seq.id(), l, g), expected) << what << " layer " << l << " KV head " << g;
    }
  }
}

class DmsGolden : public ::testing::TestWithParam<std::string> {
 protected:
  std::string dir() const { return dms_fixture(GetParam()); }
  DmsReference ref() const { return DmsReference(GetParam()); }
};

// The prompt as one prefill step, then each generated token as a decode step.
TEST_P(DmsGolden, EveryStepMatchesTheReference) {
  const Transformer model = load_dms_model(dir());
  const DmsReference r = ref();
  const auto prompt = r.ids("prompt");
  PagedSequence cache(model);
  AttentionRecorder seen(model.config().n_layers);
  const at::Tensor logits = run_chunks(model, cache, r.sequence(), {static_cast<int64_t>(prompt.size()), 1}, &seen);
  expect_logits_near(logits, r.tensor("logits"), kLogitRel, GetParam() + " logits");

  const at::Tensor decisions = seen.logits(), expected = r.tensor("decision_logits");
  ASSERT_TRUE(decisions.defined()) << "the forward handed attention no decision logits";
  expect_logits_near(decisions, expected, kDecisionRel, GetParam() + " decision logits");
  EXPECT_TRUE(at::equal(decisions > 0, expected > 0)) << GetParam() << ": an eviction decision differs";
  const double flagged = (expected > 0).to(at::kFloat).mean().item<double>();
  EXPECT_GT(flagged, 0.1) << "too few evictions to test anything";
  EXPECT_LT(flagged, 0.9) << "too few kept keys to test anything";
  expect_cache_keeps_what_the_reference_decided(cache, expected, model.config().dms.window, GetParam());

  const at::Tensor queries = seen.queries();
  expect_logits_near(queries, r.tensor("query"), kQueryRel, GetParam() + " queries after RoPE");
  const auto& c = model.config();
  const at::Tensor borrowed = queries.slice(2, 0, c.n_heads, c.group_size()).select(3, c.head_dim - 1);
  if (c.dms.mode == DmsMode::QueryChannel) {
    EXPECT_EQ(borrowed.abs().max().item<double>(), 0.0) << "Mode A must zero channel D-1 of heads g*G after RoPE";
    // Zeroed before RoPE as well, the rotary partner channel D/2-1 keeps only its cos term.
    const at::Tensor partner = queries.slice(2, 0, c.n_heads, c.group_size()).select(3, c.head_dim / 2 - 1);
    const at::Tensor ref_partner = r.tensor("query").slice(2, 0, c.n_heads, c.group_size()).select(3, c.head_dim / 2 - 1);
    expect_logits_near(partner, ref_partner, kQueryRel, GetParam() + " rotary partner of the borrowed channel");
  } else {
    EXPECT_GT(borrowed.abs().min().item<double>(), 0.0) << "Mode B must leave every query channel in place";
  }
}

// The prompt and the first generated tokens in uneven chunks, in blocks of 5 slots (not a
// divisor of the window): the visibility rule inside a multi-token step, and flagged keys of one
// chunk dropped before the next.
TEST_P(DmsGolden, ChunkedPrefillMatchesTheReference) {
  const Transformer model = load_dms_model(dir());
  const DmsReference r = ref();
  PagedSequence cache(model, /*block_size=*/5);
  const at::Tensor logits = run_chunks(model, cache, r.sequence(), {7, 13, 25, 3, 1});
  expect_logits_near(logits, r.tensor("logits"), kLogitRel, GetParam() + " chunks 7, 13, 25, 3, then decode");
}

TEST_P(DmsGolden, GreedyGenerationMatchesTheReference) {
  const Transformer model = load_dms_model(dir());
  const DmsReference r = ref();
  const auto expected = r.ids("tokens");
  PagedSequence cache(model);
  const auto ours = greedy_tokens(model, cache, r.ids("prompt"), static_cast<int64_t>(expected.size()));
  const double tie_gap = 2 * logit_bound(r.tensor("logits"), kLogitRel);
  expect_same_greedy(ours, expected, r.tensor("gap"), tie_gap, GetParam() + " greedy");
}

// dms_disable_eviction: no decision logits reach attention, so the DMS cache keeps every key and
// equals the dense cache; Mode A still zeroes its borrowed channel, as the reference does.
TEST_P(DmsGolden, DisabledEvictionMatchesTheReferenceAndTheDensePath) {
  DmsLoadOptions options;
  options.overrides.eviction_disabled = true;
  const Transformer model = load_dms_model(dir(), options);
  const DmsReference r = ref();
  const auto tokens = r.sequence();
  const std::vector<int64_t> chunks = {static_cast<int64_t>(r.ids("prompt").size()), 1};

  PagedSequence cache(model);
  AttentionRecorder seen(model.config().n_layers);
  const at::Tensor logits = run_chunks(model, cache, tokens, chunks, &seen);
  EXPECT_FALSE(seen.logits().defined()) << "decision logits reached attention with eviction disabled";
  for (int64_t l = 0; l < model.config().n_layers; ++l)
    EXPECT_EQ(cache.cache().live_positions(cache.id(), l, 0).size(), tokens.size()) << "layer " << l;
  const at::Tensor expected = r.tensor("noevict.logits");
  expect_logits_near(logits, expected, kLogitRel, GetParam() + " eviction disabled");
  DenseSequence dense(model);
  expect_logits_near(run_chunks(model, dense, tokens, chunks), logits, kLogitRel,
                     GetParam() + " dense cache vs DMS cache, eviction disabled");
  EXPECT_GT((expected - r.tensor("logits")).abs().max().item<double>(), 0.1)
      << "eviction does not change this reference, so it cannot tell eviction from none";
}

// bf16 compute and KV: the first layer's decision logits depend on the tokens alone, so they
// must match the fp32 reference to bf16 precision whatever the later evictions do. bf16 rounds
// each activation by up to 4e-3 relative, and the logit is 100 x one of them (Mode A: after a
// projection and a norm in bf16): measured worst case 9.5e-3 of the largest logit (Mode A),
// bound 3e-2; reading the wrong channel or head moves logits by about the largest logit.
TEST_P(DmsGolden, Bf16ComputeReadsTheSameFirstLayerDecisions) {
  const Transformer model = load_dms_model(dir(), {}, at::kBFloat16);
  const DmsReference r = ref();
  PagedSequence cache(model);
  AttentionRecorder seen(model.config().n_layers);
  const at::Tensor logits = run_chunks(model, cache, r.sequence(), {static_cast<int64_t>(r.ids("prompt").size()), 1}, &seen);
  EXPECT_TRUE(logits.isfinite().all().item<bool>());
  expect_logits_near(seen.logits()[0], r.tensor("decision_logits")[0], 3e-2, GetParam() + " bf16 layer 0 decision logits");
}

INSTANTIATE_TEST_SUITE_P(Golden, DmsGolden, ::testing::ValuesIn(kDmsModels),
                         [](const auto& info) { return info.param; });

// A Mode B checkpoint run with mode off is its base model, as plain transformers runs it.
class DmsModeOff : public ::testing::TestWithParam<std::string> {};

TEST_P(DmsModeOff, AdapterCheckpointIsItsBaseModel) {
  DmsLoadOptions options;
  options.overrides.mode = DmsMode::Off;
  const Transformer model = load_dms_model(dms_fixture(GetParam()), options);
  const DmsReference r(GetParam());
  const auto tokens = r.sequence();
  const std::vector<int64_t> chunks = {static_cast<int64_t>(r.ids("prompt").size()), 1};
  PagedSequence cache(model);
  AttentionRecorder seen(model.config().n_layers);
  expect_logits_near(run_chunks(model, cache, tokens, chunks, &seen), r.tensor("base.logits"), kLogitRel,
                     GetParam() + " with mode off vs its base in transformers");
  EXPECT_FALSE(seen.logits().defined());

  const Transformer base = load_dms_model(dms_fixture(GetParam() + "_base"));
  EXPECT_EQ(base.config().dms.mode, DmsMode::Off);
  DenseSequence dense(base);
  expect_logits_near(run_chunks(base, dense, tokens, chunks), r.tensor("base.logits"), kLogitRel,
                     GetParam() + "_base over the dense cache");
}

INSTANTIATE_TEST_SUITE_P(Golden, DmsModeOff, ::testing::ValuesIn(kAdapterModels),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace dms::test
