// The default GGUF model (SmolLM2-135M-Instruct, Q4_1/Q8_0) against transformers' GGUF loader,
// which dequantizes to fp32 and undoes llama.cpp's q/k row permutation on its own: the
// config against gguf-py's reading of the metadata and transformers' config, logits on a few
// prompts (ids from the tokenizer transformers builds from the file) and greedy continuations.
//
// Tolerance: max |ours - transformers| <= 1e-4 * max(1, max |logit|). Both run fp32 over the
// same dequantized weights; 30 layers of summation-order differences measured 1.5e-6 of the
// largest logit, while a wrong dequantization block or q/k permutation moves logits by units.
//
// Every comparison runs twice: with the weights dequantized at load (WeightStorage::Float, as
// training loads them) and as stored (ggml blocks read in place by kernels/cpu/quant_matmul,
// which dequantize in registers and keep the activations in fp32), as dms generate runs them.
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

Transformer load_default(WeightStorage storage) {
  auto gguf = GgufFile::open(default_model_path());
  ModelConfig config = ModelConfig::from_gguf(*gguf);
  Weights weights = load_gguf_weights(gguf, config, at::kFloat, storage);
  return Transformer(std::move(config), std::move(weights));
}

// Each loaded once for the whole suite: dequantizing 135M parameters takes a few seconds.
const Transformer& default_model(WeightStorage storage) {
  static const Transformer as_float = load_default(WeightStorage::Float);
  static const Transformer as_stored = load_default(WeightStorage::AsStored);
  return storage == WeightStorage::Float ? as_float : as_stored;
}

class DefaultGgufForward : public ::testing::TestWithParam<WeightStorage> {
 protected:
  const Transformer& model() const { return default_model(GetParam()); }
};

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

TEST_P(DefaultGgufForward, ParameterCountMatchesTransformers) {
  const auto facts = read_json("default_gguf.ref.json");
  EXPECT_EQ(parameter_count(model().weights()), facts["parameter_count"].get<int64_t>());
}

// As stored, every matrix stays in the file's blocks: the weights held are the file's bytes, not
// a copy four to eight times their size.
TEST(DefaultGguf, AsStoredHoldsTheFilesBlocks) {
  const Weights& w = default_model(WeightStorage::AsStored).weights();
  ASSERT_TRUE(w.embed.quantized());
  EXPECT_TRUE(w.lm_head.is_same(w.embed));
  for (const LayerWeights& l : w.layers)
    for (const LinearWeight* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      ASSERT_TRUE(m->quantized());
      EXPECT_EQ(m->nbytes(), m->rows() * static_cast<int64_t>(ggml_row_bytes(m->stored, m->cols)));
    }
  int64_t stored = 0;
  for (const auto& t : GgufFile::open(default_model_path())->tensors()) stored += static_cast<int64_t>(t.nbytes);
  EXPECT_EQ(weight_bytes(w), stored);
}

TEST_P(DefaultGgufForward, LogitsMatchTransformers) {
  const Reference r("default_gguf.ref.safetensors");
  const auto prompts = read_json("default_gguf.ref.json")["prompts"];
  ASSERT_GE(prompts.size(), 3u);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto prompt = r.ids("prompt." + std::to_string(i));
    expect_logits_near(prompt_logits(model(), prompt), r.tensor("logits." + std::to_string(i)), kGgufRel,
                       "prompt " + prompts[i].dump());
  }
}

// The chat prompt as a prefill of most of it followed by single-token decode steps.
TEST_P(DefaultGgufForward, PrefillThenDecodeMatchesTransformers) {
  const Reference r("default_gguf.ref.safetensors");
  const auto prompt = r.ids("prompt.1");
  ASSERT_GT(prompt.size(), 8u);
  DenseKVCache cache(model().config(), model().dtype());
  std::vector<at::Tensor> pieces;
  const size_t split = prompt.size() - 6;
  pieces.push_back(run_step(model(), cache, {prompt.begin(), prompt.begin() + split}));
  for (size_t t = split; t < prompt.size(); ++t) pieces.push_back(run_step(model(), cache, {prompt[t]}));
  expect_logits_near(at::cat(pieces, 0), r.tensor("logits.1"), kGgufRel, "chat prompt, prefill + 6 decode steps");
}

TEST_P(DefaultGgufForward, GreedyGenerationMatchesTransformers) {
  const Reference r("default_gguf.ref.safetensors");
  const auto gen_prompts = read_json("default_gguf.ref.json")["gen_prompts"];
  ASSERT_GE(gen_prompts.size(), 2u);
  const double tie_gap = 2 * logit_bound(r.tensor("logits.1"), kGgufRel);
  for (size_t i = 0; i < gen_prompts.size(); ++i) {
    const std::string key = "gen." + std::to_string(i) + ".";
    const auto expected = r.ids(key + "tokens");
    const auto ours = greedy(model(), r.ids(key + "prompt"), static_cast<int64_t>(expected.size()));
    expect_same_greedy(ours, expected, r.tensor(key + "gap"), tie_gap, "continuation of " + gen_prompts[i].dump());
  }
}

INSTANTIATE_TEST_SUITE_P(Storage, DefaultGgufForward, ::testing::Values(WeightStorage::Float, WeightStorage::AsStored),
                         [](const auto& info) { return info.param == WeightStorage::Float ? "Float" : "AsStored"; });

}  // namespace
}  // namespace dms::test
