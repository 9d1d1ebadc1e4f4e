// Our forward on the tiny random-weight checkpoints against transformers (CPU, fp32, eager
// attention): whole prompts, prefill followed by decode (also across the dense cache's storage
// growth), bf16 compute, greedy generation and the parameter count.
//
// Tolerances. fp32: max |ours - transformers| <= 1e-4 * max(1, max |logit|). Both sides compute
// the same math in fp32 and differ only in summation order (matmul blocking, softmax, RoPE
// angles computed in double here); measured differences are below 1e-6 of the largest logit,
// while a wrong rotary frequency, a missing bias or norm, or a misrouted KV head moves logits
// by 1e-1 or more. bf16 compute against the same fp32 reference: 8 mantissa bits round every
// stored activation by up to 4e-3 relative, compounded over three layers; measured worst case
// 2.1e-2 of the largest logit (300-token prompt), bound 5e-2.
#include <gtest/gtest.h>

#include "test_model_fixtures.h"

namespace dms::test {
namespace {

constexpr double kFp32Rel = 1e-4;
constexpr double kBf16Rel = 5e-2;

class TinyModel : public ::testing::TestWithParam<std::string> {
 protected:
  std::string dir() const { return fixture_path(GetParam()); }
  Reference ref() const { return Reference(GetParam() + ".ref.safetensors"); }
};

TEST_P(TinyModel, WholePromptLogitsMatchTransformers) {
  const Transformer model = load_hf_model(dir(), at::kFloat);
  const Reference r = ref();
  for (int i = 0; i < kTinyPrompts; ++i) {
    const auto prompt = r.ids("prompt." + std::to_string(i));
    expect_logits_near(prompt_logits(model, prompt), r.tensor("logits." + std::to_string(i)), kFp32Rel,
                       GetParam() + " prompt " + std::to_string(i) + " (" + std::to_string(prompt.size()) +
                           " tokens)");
  }
}

// The longest prompt in uneven pieces: a prefill, a chunk, then single-token decode steps.
TEST_P(TinyModel, PrefillThenDecodeMatchesTransformers) {
  const Transformer model = load_hf_model(dir(), at::kFloat);
  const Reference r = ref();
  const auto prompt = r.ids("prompt.2");
  const at::Tensor expected = r.tensor("logits.2");
  ASSERT_GT(prompt.size(), 20u);
  DenseKVCache cache(model.config(), model.dtype());
  std::vector<at::Tensor> pieces;
  pieces.push_back(run_step(model, cache, {prompt.begin(), prompt.begin() + 13}));
  pieces.push_back(run_step(model, cache, {prompt.begin() + 13, prompt.begin() + 20}));
  for (size_t t = 20; t < prompt.size(); ++t) pieces.push_back(run_step(model, cache, {prompt[t]}));
  EXPECT_EQ(cache.length(), static_cast<int64_t>(prompt.size()));
  const at::Tensor stepped = at::cat(pieces, 0);
  expect_logits_near(stepped, expected, kFp32Rel, GetParam() + " prefill 13 + chunk 7 + decode");
  expect_logits_near(stepped, prompt_logits(model, prompt), kFp32Rel, GetParam() + " stepped vs whole prompt");
}

// 300 tokens: a 250-token prefill, then decode steps that outgrow the cache's storage, whose
// earlier keys and values must survive the move.
TEST_P(TinyModel, DecodeAcrossCacheGrowthMatchesTransformers) {
  const Transformer model = load_hf_model(dir(), at::kFloat);
  const Reference r = ref();
  const auto prompt = r.ids("prompt.3");
  ASSERT_EQ(prompt.size(), 300u);
  DenseKVCache cache(model.config(), model.dtype());
  std::vector<at::Tensor> pieces;
  pieces.push_back(run_step(model, cache, {prompt.begin(), prompt.begin() + 250}));
  const int64_t bytes_after_prefill = cache.bytes_held();
  for (size_t t = 250; t < prompt.size(); ++t) pieces.push_back(run_step(model, cache, {prompt[t]}));
  EXPECT_GT(cache.bytes_held(), bytes_after_prefill) << "the decode steps never grew the cache";
  expect_logits_near(at::cat(pieces, 0), r.tensor("logits.3"), kFp32Rel, GetParam() + " prefill 250 + decode 50");
}

TEST_P(TinyModel, Bf16ComputeNearTransformers) {
  const Transformer model = load_hf_model(dir(), at::kBFloat16);
  ASSERT_EQ(model.dtype(), at::kBFloat16);
  const Reference r = ref();
  for (int i = 0; i < kTinyPrompts; ++i) {
    const auto prompt = r.ids("prompt." + std::to_string(i));
    const at::Tensor expected = r.tensor("logits." + std::to_string(i));
    const at::Tensor ours = prompt_logits(model, prompt);
    EXPECT_EQ(ours.scalar_type(), at::kFloat);
    expect_logits_near(ours, expected, kBf16Rel, GetParam() + " bf16 prompt " + std::to_string(i));
  }
}

TEST_P(TinyModel, GreedyGenerationMatchesTransformers) {
  const Transformer model = load_hf_model(dir(), at::kFloat);
  const Reference r = ref();
  const auto expected = r.ids("gen.tokens");
  const auto ours = greedy(model, r.ids("gen.prompt"), static_cast<int64_t>(expected.size()));
  const double tie_gap = 2 * logit_bound(r.tensor("logits.2"), kFp32Rel);
  expect_same_greedy(ours, expected, r.tensor("gen.gap"), tie_gap, GetParam() + " greedy");
}

TEST_P(TinyModel, ParameterCountMatchesTransformers) {
  const Transformer model = load_hf_model(dir(), at::kFloat);
  const auto facts = read_json(GetParam() + ".ref.json");
  EXPECT_EQ(parameter_count(model.weights()), facts["parameter_count"].get<int64_t>());
}

INSTANTIATE_TEST_SUITE_P(Golden, TinyModel, ::testing::ValuesIn(kTinyModels),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace dms::test
