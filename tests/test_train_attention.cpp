// The training forward's attention (TrainingAttention) against independent paths:
//   - a_soft forced to 0 (noise -1e4) and the teacher (no decision logits): the dense KV cache's
//     forward, document by document;
//   - decisions saturated to hard 0/1 (noise +-50 in the direction of each logit's own sign, so
//     |z| >= 500 and log(1 - a_soft) is 0 or below -500): the paged KV cache with the dms policy,
//     and the independent reference DMS forward on transformers (its logits in the fixtures),
//     on the same decisions;
//   - packing: a batch of packed documents gives each document's logits and decisions as the
//     document alone does, with soft (unsaturated) decisions;
//   - the relaxed decision itself: z, a_soft, a_hard and the straight-through gradient.
// Tolerances (fp32 throughout; only summation orders differ):
//   logits   max |ours - ref| <= 1e-4 * max(1, max |ref|), as the model tests use; measured
//            worst cases are stated next to each test.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>

#include "dms/train/decision_noise.h"
#include "dms/train/training_attention.h"
#include "test_dms_model_fixtures.h"
#include "test_model_fixtures.h"
#include "test_train_helpers.h"

namespace dms::test {
namespace {

constexpr double kLogitRel = 1e-4;

// Noise that is a function of the logit alone, so a document's noise does not depend on where
// it sits in a batch: `shift` in the direction of the logit's sign (saturation), or a constant.
class LogitNoise : public DecisionNoise {
 public:
  static LogitNoise saturating(double shift) { return LogitNoise(shift, 0); }
  static LogitNoise constant(double value) { return LogitNoise(0, value); }
  at::Tensor sample(int64_t, const at::Tensor& logits) override {
    return at::where(logits > 0, shift_, -shift_) + constant_;
  }

 private:
  LogitNoise(double shift, double constant) : shift_(shift), constant_(constant) {}
  double shift_, constant_;
};

TrainingAttentionOptions options_of(const Transformer& model, double tau = 0.1) {
  return {.window = model.config().dms.window, .tau = tau, .per_layer = model.config().dms.per_layer};
}

at::Tensor training_logits(const Transformer& model, const TrainBatch& batch, TrainingAttention& attn) {
  return model.logits(model.forward(batch.tokens, batch.positions, attn));
}

at::Tensor counted_rows(const at::Tensor& t, const TrainBatch& batch) { return t.index({batch.counted}); }

TEST(TrainingAttention, SoftDecisionsForcedToZeroGiveTheDenseForward) {
  TinyModelSpec spec{.qk_norm = true, .dms = {.mode = DmsMode::Adapter, .window = 3}};
  const Transformer model = tiny_model(spec, at::kFloat);
  const TrainBatch batch = packed_batch({{9, 11, 4}, {24}}, 24, spec.vocab, 5);
  LogitNoise keep = LogitNoise::constant(-1e4);
  TrainingAttention attn(batch, options_of(model), &keep);
  const at::Tensor ours = training_logits(model, batch, attn);
  for (const auto& d : attn.decisions()) EXPECT_EQ(d.soft.max().item<double>(), 0.0) << "a_soft must be exactly 0";
  const at::Tensor ref = dense_document_logits(model, batch);
  // Measured: 6e-7 of the largest logit.
  expect_logits_near(counted_rows(ours, batch), counted_rows(ref, batch), kLogitRel, "a_soft = 0 vs dense");
}

TEST(TrainingAttention, WithoutDecisionLogitsItIsTheDenseForward) {
  TinyModelSpec spec{.arch = Arch::Qwen2, .qkv_bias = true};
  const Transformer model = tiny_model(spec, at::kFloat);
  const TrainBatch batch = packed_batch({{5, 19}, {7, 7, 7}}, 24, spec.vocab, 6);
  TrainingAttention attn(batch, {.window = 2}, nullptr);
  const at::Tensor ours = training_logits(model, batch, attn);
  EXPECT_TRUE(attn.decisions().empty());
  expect_logits_near(counted_rows(ours, batch), counted_rows(dense_document_logits(model, batch), batch), kLogitRel,
                     "no decisions vs dense");
}

class TrainingAttentionHard : public ::testing::TestWithParam<std::string> {};

// The reference sequence of each DMS fixture (window 16, 219 tokens, a fifth to nine tenths of
// keys flagged), as one training sequence with saturated decisions.
TEST_P(TrainingAttentionHard, SaturatedDecisionsSeeWhatThePagedCacheKeeps) {
  const Transformer model = load_dms_model(dms_fixture(GetParam()));
  const DmsReference r(GetParam());
  const auto tokens = r.sequence();
  const int64_t T = static_cast<int64_t>(tokens.size());
  const TrainBatch batch = make_train_batch(at::tensor(tokens, at::kLong).view({1, T}), at::zeros({1, T}, at::kLong),
                                            at::ones({1, T}, at::kBool));
  LogitNoise saturate = LogitNoise::saturating(50);
  TrainingAttention attn(batch, options_of(model), &saturate);
  const at::Tensor ours = training_logits(model, batch, attn);

  // The decisions are the logits' own: flagged iff l > 0, and saturated.
  const at::Tensor expected_flags = r.tensor("decision_logits") > 0;  // [L, T, n_kv]
  for (int64_t l = 0; l < model.config().n_layers; ++l) {
    const auto& d = attn.decisions()[l];
    EXPECT_TRUE(at::equal(d.hard > 0.5, expected_flags[l])) << "layer " << l;
    EXPECT_TRUE(at::equal(d.soft, d.hard)) << "layer " << l << ": a_soft must saturate to exactly 0 or 1";
  }

  PagedSequence paged(model);
  const at::Tensor via_cache = run_chunks(model, paged, tokens, {40, 1});
  // Measured: 1.5e-6 (paged) and 2e-6 (reference) of the largest logit.
  expect_logits_near(ours, via_cache, kLogitRel, GetParam() + ": training vs paged cache");
  expect_logits_near(ours, r.tensor("logits"), kLogitRel, GetParam() + ": training vs reference DMS forward");
}

INSTANTIATE_TEST_SUITE_P(DmsFixtures, TrainingAttentionHard, ::testing::ValuesIn(kDmsModels));

// Packed documents with soft decisions: a document's logits and decisions do not depend on its
// neighbours, in its own sequence or in others.
TEST(TrainingAttention, PackedDocumentsMatchTheDocumentsAlone) {
  TinyModelSpec spec{.arch = Arch::Qwen3, .qk_norm = true,
                     .dms = {.mode = DmsMode::Adapter, .alpha_scale = 1, .alpha_offset = 0.5, .window = 2},
                     .decision_spread = 0.3};
  const Transformer model = tiny_model(spec, at::kFloat);
  const std::vector<std::vector<int64_t>> docs = {{10, 9}, {24}, {3, 6, 12}};
  const TrainBatch batch = packed_batch(docs, 24, spec.vocab, 7);
  LogitNoise noise = LogitNoise::constant(0.05);
  TrainingAttention packed_attn(batch, options_of(model, 1.0), &noise);
  const at::Tensor packed = training_logits(model, batch, packed_attn);
  double soft_share = 0;
  for (const auto& d : packed_attn.decisions())
    soft_share += ((d.soft > 0.02) & (d.soft < 0.98)).to(at::kDouble).mean().item<double>() / spec.layers;
  EXPECT_GT(soft_share, 0.5) << "decisions should be soft for this test to mean anything";

  for (size_t b = 0; b < docs.size(); ++b) {
    int64_t start = static_cast<int64_t>(b) * 24;
    for (int64_t len : docs[b]) {
      const TrainBatch alone = make_train_batch(batch.tokens.narrow(0, start, len).view({1, len}),
                                                at::zeros({1, len}, at::kLong), at::ones({1, len}, at::kBool));
      TrainingAttention alone_attn(alone, options_of(model, 1.0), &noise);
      const at::Tensor expected = training_logits(model, alone, alone_attn);
      // Measured: 4e-7 of the largest logit.
      expect_logits_near(rows(packed, start, len), expected, kLogitRel,
                         "sequence " + std::to_string(b) + " document at row " + std::to_string(start));
      for (int64_t l = 0; l < spec.layers; ++l)
        EXPECT_LT((rows(packed_attn.decisions()[l].soft, start, len) - alone_attn.decisions()[l].soft).abs().max().item<double>(),
                  1e-5);
      start += len;
    }
  }
}

// z = (l + u) / tau, a_soft = sigmoid(z), a_hard = 1[a_soft > 0.5] in the forward and a_soft's
// gradient in the backward; per-layer decisions take head 0's noise too.
TEST(TrainingAttention, RelaxedDecisionsAndStraightThroughGradient) {
  for (bool per_layer : {false, true}) {
    const int64_t B = 2, T = 6, n_kv = 3, D = 4;
    const TrainBatch batch = packed_batch({{6}, {2, 4}}, T, 10, 8);
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(9);
    auto q = at::randn({B * T, n_kv * 2, D}, gen, at::kDouble), k = at::randn({B * T, n_kv, D}, gen, at::kDouble);
    auto v = at::randn({B * T, n_kv, D}, gen, at::kDouble);
    auto l = at::randn({B * T, n_kv}, gen, at::kDouble).requires_grad_(true);
    auto u = at::randn({B * T, n_kv}, gen, at::kDouble);
    FixedNoise noise({u});
    const double tau = 0.7;
    TrainingAttention attn(batch, {.window = 1, .tau = tau, .per_layer = per_layer}, &noise);
    attn.attend(0, q, k, v, l);
    const auto& d = attn.decisions()[0];
    const auto u_used = per_layer ? u.narrow(1, 0, 1).expand_as(u) : u;
    const auto z = (l.detach() + u_used) / tau;
    EXPECT_LT((d.z.detach() - z).abs().max().item<double>(), 1e-12);
    const auto soft = 1 / (1 + at::exp(-z));
    EXPECT_LT((d.soft.detach() - soft).abs().max().item<double>(), 1e-12);
    EXPECT_TRUE(at::equal(d.hard.detach(), (soft > 0.5).to(at::kDouble)));
    d.hard.sum().backward();
    EXPECT_LT((l.grad() - soft * (1 - soft) / tau).abs().max().item<double>(), 1e-12) << "per_layer " << per_layer;
  }
}

TEST(StepNoise, KeyedBySequenceSoSplittingAStepChangesNothing) {
  const auto logits = at::zeros({2 * 5, 3});
  StepNoise whole(11, 4, 0, 2, 5), second(11, 4, 1, 1, 5), next_step(11, 5, 0, 2, 5), other_seed(12, 4, 0, 2, 5);
  const auto w = whole.sample(2, logits);
  EXPECT_TRUE(at::equal(rows(w, 5, 5), second.sample(2, at::zeros({5, 3}))));
  EXPECT_FALSE(at::equal(w, whole.sample(3, logits))) << "layers must differ";
  EXPECT_FALSE(at::equal(w, next_step.sample(2, logits))) << "steps must differ";
  EXPECT_FALSE(at::equal(w, other_seed.sample(2, logits))) << "seeds must differ";
  EXPECT_TRUE(at::equal(w, StepNoise(11, 4, 0, 2, 5).sample(2, logits))) << "the same key must give the same noise";
}

// G1 - G2 of standard Gumbels is standard logistic: mean 0, variance pi^2/3, P(u <= x) =
// sigmoid(x). 200k samples: the standard error of the mean is 0.004, of the variance 0.013
// (a logistic's fourth moment is 21 pi^4 / 15), of a CDF point at most 0.0011; bounds are 5x.
TEST(StepNoise, IsStandardLogistic) {
  const auto u = logistic_noise(3, 200000, 1);
  EXPECT_NEAR(u.mean().item<double>(), 0.0, 0.02);
  EXPECT_NEAR(u.var().item<double>(), M_PI * M_PI / 3, 0.065);
  for (double x : {-2.0, -0.5, 0.0, 1.0, 3.0})
    EXPECT_NEAR((u <= x).to(at::kDouble).mean().item<double>(), 1 / (1 + std::exp(-x)), 0.0055) << "x = " << x;
}

}  // namespace
}  // namespace dms::test
