// The default GGUF model (SmolLM2-135M-Instruct, Q4_1/Q8_0) against transformers' GGUF loader,
// which dequantizes to fp32 and undoes llama.cpp's q/k row permutation on its own: the
// config against gguf-py's reading of the metadata and transformers' config, logits on a few
// prompts (ids from the tokenizer transformers builds from the file) and greedy continuations.
//
// Tolerance: max |ours - transformers| <= 1e-4 * max(1, max |logit|). Both run fp32 over the
// same dequantized weights; 30 layers of summation-order differences measured 1.5e-6 of the
// largest logit, while a wrong dequantization block or q/k permutation moves logits by units.
//
// Every comparison runs three times: with the weights dequantized at load (WeightStorage::Float,
// as training loads them); as stored (ggml blocks read in place by kernels/cpu/quant_matmul) with
// fp32 activations; and as stored with the decode path's 16-bit activations, as dms generate runs
// them by default. The last is compared with transformers running the same quantization of every
// linear layer's input where the engine applies it (calls of fewer than kBatchedMinRows rows:
// the i16.* references of make_model_fixtures.py). On top of 1e-4 it is allowed half of what the
// quantization moves transformers' own logits (max |i16 reference - fp32 reference|): the two
// forwards quantize inputs that differ in their last bits, so now and then a level rounds the
// other way, a step of 2^-15 of its block's largest value, and 30 layers carry such flips to the
// logits. Measured on "The quick brown fox": quantizing moves transformers' logits by up to 0.0069
// (of 27); ours are within 0.0049 of the 16-bit reference and 0.0071 of the fp32 one, so the bound
// (0.0062) tells the two apart. A wrong level, scale or block moves logits by units.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <fstream>
#include <sstream>

#include "dms/format/gguf.h"
#include "dms/model/config.h"
#include "dms/kernels/cpu/quant_matmul.h"
#include "dms/model/weights.h"
#include "dms/tokenizer/tokenizer.h"
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

enum class Run { Float, AsStoredF32, AsStoredI16 };

class DefaultGgufForward : public ::testing::TestWithParam<Run> {
 protected:
  void SetUp() override {
    if (GetParam() == Run::AsStoredI16 && cpu::default_cpu_isa() == cpu::CpuIsa::Scalar)
      GTEST_SKIP() << "no 16-bit activation kernels on this CPU (scalar ISA)";
    activations_.emplace(GetParam() == Run::AsStoredI16 ? cpu::Activations::Int16 : cpu::Activations::Float);
  }
  void TearDown() override { activations_.reset(); }
  const Transformer& model() const {
    return default_model(GetParam() == Run::Float ? WeightStorage::Float : WeightStorage::AsStored);
  }
  // The reference tensor `key`, or its 16-bit-activation version.
  std::string ref(const std::string& key) const { return GetParam() == Run::AsStoredI16 ? "i16." + key : key; }
  // What the 16-bit run may differ by on top of kGgufRel (see the top of the file): half of
  // max |i16 - f32| of the two references.
  double allowance(const at::Tensor& i16, const at::Tensor& f32) const {
    return GetParam() == Run::AsStoredI16 ? 0.5 * (i16 - f32).abs().max().item<double>() : 0.0;
  }

 private:
  std::optional<ActivationsFor> activations_;
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
// a copy four to eight times their size; packed (the same bytes regrouped) where packing pays on
// this CPU, as every matrix of this model has whole groups of 16 rows.
TEST(DefaultGguf, AsStoredHoldsTheFilesBlocks) {
  const Weights& w = default_model(WeightStorage::AsStored).weights();
  ASSERT_TRUE(w.embed.quantized());
  EXPECT_TRUE(w.lm_head.is_same(w.embed));
  EXPECT_EQ(w.embed.packed, cpu::quant_pack_pays(w.embed.stored, cpu::default_cpu_isa()));
  for (const LayerWeights& l : w.layers)
    for (const LinearWeight* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      ASSERT_TRUE(m->quantized());
      EXPECT_EQ(m->nbytes(), m->rows() * static_cast<int64_t>(ggml_row_bytes(m->stored, m->cols)));
      ASSERT_EQ(m->rows() % cpu::kPackRows, 0);
      EXPECT_EQ(m->packed, cpu::quant_pack_pays(m->stored, cpu::default_cpu_isa()));
    }
  int64_t stored = 0;
  // The file held in a variable: a temporary in a range-for's initializer dies before the loop runs.
  const auto file = GgufFile::open(default_model_path());
  for (const auto& t : file->tensors()) stored += static_cast<int64_t>(t.nbytes);
  EXPECT_EQ(weight_bytes(w), stored);
}

TEST_P(DefaultGgufForward, LogitsMatchTransformers) {
  const Reference r("default_gguf.ref.safetensors");
  const auto prompts = read_json("default_gguf.ref.json")["prompts"];
  ASSERT_GE(prompts.size(), 3u);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto prompt = r.ids("prompt." + std::to_string(i));
    const std::string key = "logits." + std::to_string(i);
    expect_logits_near(prompt_logits(model(), prompt), r.tensor(ref(key)), kGgufRel, "prompt " + prompts[i].dump(),
                       allowance(r.tensor("i16." + key), r.tensor(key)));
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
  // Without 16-bit activations the split changes nothing but summation order: the one-pass logits.
  const at::Tensor expected = r.tensor(GetParam() == Run::AsStoredI16 ? "i16.split.1" : "logits.1");
  expect_logits_near(at::cat(pieces, 0), expected, kGgufRel, "chat prompt, prefill + 6 decode steps",
                     allowance(r.tensor("i16.split.1"), r.tensor("logits.1")));
}

TEST_P(DefaultGgufForward, GreedyGenerationMatchesTransformers) {
  const Reference r("default_gguf.ref.safetensors");
  const auto gen_prompts = read_json("default_gguf.ref.json")["gen_prompts"];
  ASSERT_GE(gen_prompts.size(), 2u);
  const double tie_gap = 2 * logit_bound(r.tensor("logits.1"), kGgufRel);
  for (size_t i = 0; i < gen_prompts.size(); ++i) {
    const std::string key = "gen." + std::to_string(i) + ".";
    const auto expected = r.ids(ref(key + "tokens"));
    const auto ours = greedy(model(), r.ids(key + "prompt"), static_cast<int64_t>(expected.size()));
    expect_same_greedy(ours, expected, r.tensor(ref(key + "gap")), tie_gap, "continuation of " + gen_prompts[i].dump());
  }
}

INSTANTIATE_TEST_SUITE_P(Storage, DefaultGgufForward, ::testing::Values(Run::Float, Run::AsStoredF32, Run::AsStoredI16),
                         [](const auto& info) {
                           return info.param == Run::Float ? "Float" : info.param == Run::AsStoredF32 ? "AsStoredF32" : "AsStoredI16";
                         });

// What the 16-bit activations cost in quality: teacher-forced next-token distributions over 2048
// tokens of text (the GPL-3 licence, in steps of 16 tokens so that every linear layer takes the
// decode path) with fp32 and with 16-bit activations, same weights as stored. The target is a KL
// divergence of at most 0.001 nats per token; the prefix of the measured value is printed.
TEST(DefaultGguf, Int16ActivationsKeepTheFloatDistribution) {
  if (cpu::default_cpu_isa() == cpu::CpuIsa::Scalar) GTEST_SKIP() << "no 16-bit activation kernels on this CPU";
  std::ifstream in("/usr/share/common-licenses/GPL-3");
  ASSERT_TRUE(in) << "/usr/share/common-licenses/GPL-3 (Debian's base-files)";
  std::stringstream text;
  text << in.rdbuf();
  const auto gguf = GgufFile::open(default_model_path());
  const auto encoded = Tokenizer::from_gguf(*gguf)->encode(text.str(), false);
  constexpr int64_t kTokens = 2048, kStep = 16;
  ASSERT_GE(static_cast<int64_t>(encoded.size()), kTokens);
  const Transformer& model = default_model(WeightStorage::AsStored);
  auto log_probs = [&](cpu::Activations a) {
    ActivationsFor scope(a);
    DenseKVCache cache(model.config(), model.dtype());
    std::vector<at::Tensor> steps;
    for (int64_t t = 0; t < kTokens; t += kStep)
      steps.push_back(at::log_softmax(run_step(model, cache, {encoded.begin() + t, encoded.begin() + t + kStep}), -1));
    return at::cat(steps, 0).to(at::kDouble);
  };
  const at::Tensor f32 = log_probs(cpu::Activations::Float), i16 = log_probs(cpu::Activations::Int16);
  const double kl = (f32.exp() * (f32 - i16)).sum(-1).mean().item<double>();
  const double agree = (f32.argmax(-1) == i16.argmax(-1)).to(at::kDouble).mean().item<double>();
  std::printf("KL(fp32 || 16-bit activations) = %.3g nats/token, top-1 agreement %.4f over %lld tokens\n", kl, agree,
              static_cast<long long>(kTokens));
  EXPECT_LE(kl, 0.001);
  EXPECT_GT(kl, 0.0);  // the two paths really differ: the 16-bit kernels ran
}

}  // namespace
}  // namespace dms::test
