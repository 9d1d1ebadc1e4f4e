// The default GGUF model (SmolLM2-135M-Instruct, Q4_1/Q8_0) against transformers' GGUF loader,
// which dequantizes to fp32 and undoes llama.cpp's q/k row permutation on its own: the
// config against gguf-py's reading of the metadata and transformers' config, logits on a few
// prompts (ids from the tokenizer transformers builds from the file) and greedy continuations.
//
// Tolerance: max |ours - transformers| <= 1e-4 * max(1, max |logit|). Both run fp32 over the
// same dequantized weights; 30 layers of summation-order differences measured 1.5e-6 of the
// largest logit, while a wrong dequantization block or q/k permutation moves logits by units.
#include <gtest/gtest.h>

#include <cstdlib>

#include "dms/format/gguf.h"
#include "dms/model/config.h"
#include "dms/model/weights.h"
#include "dms/util/error.h"
#include "test_model_fixtures.h"

namespace dms::test {
namespace {

constexpr double kGgufRel = 1e-4;

std::string default_model_path() {
  const char* p = std::getenv("DMS_DEFAULT_MODEL");
  if (!p || !*p) fail("DMS_DEFAULT_MODEL", "not set; source scripts/env.sh and run scripts/fetch-default-model");
  return p;
}

// Loaded once for the whole suite: dequantizing 135M parameters takes a few seconds.
const Transformer& default_model() {
  static const Transformer model = [] {
    auto gguf = GgufFile::open(default_model_path());
    ModelConfig config = ModelConfig::from_gguf(*gguf);
    Weights weights = load_gguf_weights(gguf, config, at::kFloat);
    return Transformer(std::move(config), std::move(weights));
  }();
  return model;
}

TEST(DefaultGguf, ConfigMatchesMetadataAndTransformers) {
  const auto gguf = GgufFile::open(default_model_path());
  const ModelConfig c = ModelConfig::from_gguf(*gguf);
  const auto facts = read_json("default_gguf.ref.json");
  const auto& meta = facts["gguf_metadata"];
  EXPECT_EQ(c.model_type, meta["architecture"].get<std::string>());
  EXPECT_EQ(c.n_layers, meta["block_count"].get<int64_t>());
  EXPECT_EQ(c.hidden_size, meta["embedding_length"].get<int64_t>());
  EXPECT_EQ(c.intermediate_size, meta["feed_forward_length"].get<int64_t>());
  EXPECT_EQ(c.n_heads, meta["head_count"].get<int64_t>());
  EXPECT_EQ(c.n_kv_heads, meta["head_count_kv"].get<int64_t>());
  EXPECT_EQ(c.head_dim, meta["rope_dimension_count"].get<int64_t>());
  EXPECT_EQ(c.max_position, meta["context_length"].get<int64_t>());
  EXPECT_DOUBLE_EQ(c.rms_eps, meta["rms_eps"].get<double>());
  EXPECT_DOUBLE_EQ(c.rope.theta, meta["rope_freq_base"].get<double>());
  EXPECT_EQ(c.vocab_size, meta["token_count"].get<int64_t>());
  EXPECT_EQ(c.bos_id, meta["bos_token_id"].get<int32_t>());
  EXPECT_EQ(c.eos_ids, std::vector<int32_t>{meta["eos_token_id"].get<int32_t>()});
  EXPECT_EQ(c.tie_word_embeddings, !meta["has_output_weight"].get<bool>());

  const auto& hf = facts["hf_config"];
  EXPECT_EQ(c.vocab_size, hf["vocab_size"].get<int64_t>());
  EXPECT_EQ(c.head_dim, hf["head_dim"].get<int64_t>());
  EXPECT_EQ(c.rope.type, hf["rope_type"].get<std::string>());
  EXPECT_EQ(c.tie_word_embeddings, hf["tie_word_embeddings"].get<bool>());
  EXPECT_EQ(c.qkv_bias, hf["q_bias"].get<bool>());
  EXPECT_EQ(c.o_bias, hf["o_bias"].get<bool>());
  EXPECT_EQ(c.mlp_bias, hf["mlp_bias"].get<bool>());
  EXPECT_EQ(c.qk_norm, hf["qk_norm"].get<bool>());
}

TEST(DefaultGguf, ParameterCountMatchesTransformers) {
  const auto facts = read_json("default_gguf.ref.json");
  EXPECT_EQ(parameter_count(default_model().weights()), facts["parameter_count"].get<int64_t>());
}

TEST(DefaultGguf, LogitsMatchTransformers) {
  const Reference r("default_gguf.ref.safetensors");
  const auto prompts = read_json("default_gguf.ref.json")["prompts"];
  ASSERT_GE(prompts.size(), 3u);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto prompt = r.ids("prompt." + std::to_string(i));
    expect_logits_near(prompt_logits(default_model(), prompt), r.tensor("logits." + std::to_string(i)), kGgufRel,
                       "prompt " + prompts[i].dump());
  }
}

// The chat prompt as a prefill of most of it followed by single-token decode steps.
TEST(DefaultGguf, PrefillThenDecodeMatchesTransformers) {
  const Reference r("default_gguf.ref.safetensors");
  const auto prompt = r.ids("prompt.1");
  ASSERT_GT(prompt.size(), 8u);
  DenseKVCache cache(default_model().config(), default_model().dtype());
  std::vector<at::Tensor> pieces;
  const size_t split = prompt.size() - 6;
  pieces.push_back(run_step(default_model(), cache, {prompt.begin(), prompt.begin() + split}));
  for (size_t t = split; t < prompt.size(); ++t) pieces.push_back(run_step(default_model(), cache, {prompt[t]}));
  expect_logits_near(at::cat(pieces, 0), r.tensor("logits.1"), kGgufRel, "chat prompt, prefill + 6 decode steps");
}

TEST(DefaultGguf, GreedyGenerationMatchesTransformers) {
  const Reference r("default_gguf.ref.safetensors");
  const auto gen_prompts = read_json("default_gguf.ref.json")["gen_prompts"];
  ASSERT_GE(gen_prompts.size(), 2u);
  const double tie_gap = 2 * logit_bound(r.tensor("logits.1"), kGgufRel);
  for (size_t i = 0; i < gen_prompts.size(); ++i) {
    const std::string key = "gen." + std::to_string(i) + ".";
    const auto expected = r.ids(key + "tokens");
    const auto ours = greedy(default_model(), r.ids(key + "prompt"), static_cast<int64_t>(expected.size()));
    expect_same_greedy(ours, expected, r.tensor(key + "gap"), tie_gap, "continuation of " + gen_prompts[i].dump());
  }
}

}  // namespace
}  // namespace dms::test
