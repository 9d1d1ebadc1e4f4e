// The tiny checkpoints converted to GGUF the way llama.cpp converts them (gguf-py's tensor
// names, Llama q/k rows interleaved, Llama 3 scaling as rope_freqs, BF16 matrices for the bf16
// checkpoint; the generator checks the files by reading them back with transformers). Loaded
// through our GGUF path they must reproduce the safetensors checkpoints' transformers logits
// with the fp32 tolerance of test_model_forward.cpp.
//
// TinyGgufStored: the same models with every matrix in one of the types gguf-py writes (Q4_0,
// Q4_1, Q5_0, Q5_1, Q8_0, F16, BF16), read as stored by quant_matmul's kernels, against
// transformers over the weights its GGUF loader dequantizes: with fp32 activations within 1e-4 as
// above, and with the decode path's 16-bit activations (block types, prompts of fewer than 24
// tokens) against transformers quantizing every linear layer's input the same way, within 1e-4
// plus half of what that quantization moves transformers' own logits (test_model_gguf.cpp says why).
#include <gtest/gtest.h>

#include <tuple>

#include "dms/util/error.h"
#include "dms/format/gguf.h"
#include "dms/kernels/cpu/quant_matmul.h"
#include "dms/model/config.h"
#include "dms/model/weights.h"
#include "test_model_fixtures.h"

namespace dms::test {
namespace {

constexpr double kFp32Rel = 1e-4;

Transformer load_tiny_gguf(const std::string& name) {
  auto gguf = GgufFile::open(fixture_path(name + ".gguf"));
  ModelConfig config = ModelConfig::from_gguf(*gguf);
  Weights weights = load_gguf_weights(gguf, config, at::kFloat);
  return Transformer(std::move(config), std::move(weights));
}

class TinyGguf : public ::testing::TestWithParam<std::string> {};

TEST_P(TinyGguf, ConfigMatchesTransformers) {
  const ModelConfig c = ModelConfig::from_gguf(*GgufFile::open(fixture_path(GetParam() + ".gguf")));
  const auto hf = read_json(GetParam() + ".ref.json")["hf_config"];
  EXPECT_EQ(c.model_type, hf["model_type"].get<std::string>());
  EXPECT_EQ(c.vocab_size, hf["vocab_size"].get<int64_t>());
  EXPECT_EQ(c.hidden_size, hf["hidden_size"].get<int64_t>());
  EXPECT_EQ(c.intermediate_size, hf["intermediate_size"].get<int64_t>());
  EXPECT_EQ(c.n_layers, hf["num_hidden_layers"].get<int64_t>());
  EXPECT_EQ(c.n_heads, hf["num_attention_heads"].get<int64_t>());
  EXPECT_EQ(c.n_kv_heads, hf["num_key_value_heads"].get<int64_t>());
  EXPECT_EQ(c.head_dim, hf["head_dim"].get<int64_t>());
  EXPECT_EQ(c.max_position, hf["max_position_embeddings"].get<int64_t>());
  EXPECT_FLOAT_EQ(c.rms_eps, hf["rms_norm_eps"].get<double>());  // GGUF stores it as f32
  EXPECT_DOUBLE_EQ(c.rope.theta, hf["rope_theta"].get<double>());
  // GGUF carries Llama 3 scaling as rope_freqs divisors, not as a rope type.
  if (hf["rope_type"] != "llama3") {
    EXPECT_EQ(c.rope.type, hf["rope_type"].get<std::string>());
    EXPECT_DOUBLE_EQ(c.rope.factor, hf["rope_factor"].get<double>());
  }
  EXPECT_EQ(c.tie_word_embeddings, hf["tie_word_embeddings"].get<bool>());
  EXPECT_EQ(c.qkv_bias, hf["q_bias"].get<bool>());
  EXPECT_EQ(c.o_bias, hf["o_bias"].get<bool>());
  EXPECT_EQ(c.mlp_bias, hf["mlp_bias"].get<bool>());
  EXPECT_EQ(c.qk_norm, hf["qk_norm"].get<bool>());
  EXPECT_EQ(c.bos_id, hf["bos_token_id"].get<int32_t>());
  EXPECT_EQ(c.eos_ids, hf["eos_token_ids"].get<std::vector<int32_t>>());
}

TEST_P(TinyGguf, LogitsMatchTransformers) {
  const Transformer model = load_tiny_gguf(GetParam());
  const Reference r(GetParam() + ".ref.safetensors");
  for (int i = 0; i < kTinyPrompts; ++i) {
    const auto prompt = r.ids("prompt." + std::to_string(i));
    expect_logits_near(prompt_logits(model, prompt), r.tensor("logits." + std::to_string(i)), kFp32Rel,
                       GetParam() + ".gguf prompt " + std::to_string(i));
  }
}

TEST_P(TinyGguf, GreedyGenerationMatchesTransformers) {
  const Transformer model = load_tiny_gguf(GetParam());
  const Reference r(GetParam() + ".ref.safetensors");
  const auto expected = r.ids("gen.tokens");
  const auto ours = greedy(model, r.ids("gen.prompt"), static_cast<int64_t>(expected.size()));
  const double tie_gap = 2 * logit_bound(r.tensor("logits.2"), kFp32Rel);
  expect_same_greedy(ours, expected, r.tensor("gen.gap"), tie_gap, GetParam() + ".gguf greedy");
}

TEST_P(TinyGguf, ParameterCountMatchesTransformers) {
  const Transformer model = load_tiny_gguf(GetParam());
  EXPECT_EQ(parameter_count(model.weights()), read_json(GetParam() + ".ref.json")["parameter_count"].get<int64_t>());
}

INSTANTIATE_TEST_SUITE_P(Golden, TinyGguf, ::testing::ValuesIn(kTinyModels),
                         [](const auto& info) { return info.param; });

class TinyGgufStored : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(TinyGgufStored, LogitsMatchTransformers) {
  const auto& [name, type] = GetParam();
  const std::string file = name + "." + type;
  auto gguf = GgufFile::open(fixture_path(file + ".gguf"));
  ModelConfig config = ModelConfig::from_gguf(*gguf);
  const Transformer model(config, load_gguf_weights(gguf, config, at::kFloat, WeightStorage::AsStored));
  for (const LinearWeight* m : {&model.weights().layers[0].wq, &model.weights().layers[0].w_down, &model.weights().lm_head}) {
    ASSERT_TRUE(m->quantized()) << file;
    EXPECT_EQ(ggml_type_name(m->stored), type) << file;
  }
  const Reference r(file + ".ref.safetensors"), prompts(name + ".ref.safetensors");
  const bool blocks = type[0] == 'Q';
  for (cpu::Activations a : {cpu::Activations::Float, cpu::Activations::Int16}) {
    if (a == cpu::Activations::Int16 && (!blocks || cpu::default_cpu_isa() == cpu::CpuIsa::Scalar)) continue;
    const ActivationsFor scope(a);
    for (int i = 0; i < kTinyPrompts; ++i) {
      const std::string key = "logits." + std::to_string(i);
      const auto prompt = prompts.ids("prompt." + std::to_string(i));
      const bool i16 = a == cpu::Activations::Int16 && static_cast<int64_t>(prompt.size()) < cpu::kBatchedMinRows;
      const at::Tensor expected = r.tensor(i16 ? "i16." + key : key);
      const double allowance = i16 ? 0.5 * (expected - r.tensor(key)).abs().max().item<double>() : 0.0;
      expect_logits_near(prompt_logits(model, prompt), expected, kFp32Rel,
                         file + ".gguf prompt " + std::to_string(i) + (i16 ? " (16-bit activations)" : ""), allowance);
    }
  }
}

// A layer's q, k and v (and gate and up) in one linear_many call are each linear's own bits, with
// 1 and 9 rows and with a bf16 input; an input of the wrong width is refused, naming both widths.
TEST_P(TinyGgufStored, LinearManyIsEachLinear) {
  const auto& [name, type] = GetParam();
  auto gguf = GgufFile::open(fixture_path(name + "." + type + ".gguf"));
  ModelConfig config = ModelConfig::from_gguf(*gguf);
  const Transformer model(config, load_gguf_weights(gguf, config, at::kFloat, WeightStorage::AsStored));
  const LayerWeights& l = model.weights().layers[0];
  at::manual_seed(5);
  for (const at::Tensor& x : {at::randn({1, config.hidden_size}), at::randn({9, config.hidden_size}),
                              at::randn({2, 3, config.hidden_size}).to(at::kBFloat16)}) {
    const auto qkv = linear_many(x, {&l.wq, &l.wk, &l.wv}, {&l.bq, &l.bk, &l.bv});
    EXPECT_TRUE(at::equal(qkv[0], linear(x, l.wq, l.bq)) && at::equal(qkv[1], linear(x, l.wk, l.bk)) &&
                at::equal(qkv[2], linear(x, l.wv, l.bv)))
        << name << " " << type << " " << x.sizes();
    const auto gate_up = linear_many(x, {&l.w_gate, &l.w_up}, {&l.b_gate, &l.b_up});
    EXPECT_TRUE(at::equal(gate_up[0], linear(x, l.w_gate, l.b_gate)) && at::equal(gate_up[1], linear(x, l.w_up, l.b_up)));
  }
  try {
    linear(at::randn({2, config.hidden_size + 1}), l.wq);
    ADD_FAILURE() << "an input of the wrong width was multiplied";
  } catch (const dms::Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(config.hidden_size + 1) + " features"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, TinyGgufStored,
                         ::testing::Combine(::testing::ValuesIn(kTinyModels),
                                            ::testing::Values("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16", "BF16")),
                         [](const auto& info) { return std::get<0>(info.param) + "_" + std::get<1>(info.param); });

}  // namespace
}  // namespace dms::test
