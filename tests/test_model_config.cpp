// ModelConfig::from_hf_dir against the config transformers builds from the same config.json
// (and against the modules it instantiates: which biases and norms exist).
#include <gtest/gtest.h>

#include "dms/model/config.h"
#include "test_model_fixtures.h"

namespace dms::test {
namespace {

void expect_rope_matches(const RopeConfig& r, const nlohmann::json& hf) {
  EXPECT_EQ(r.type, hf["rope_type"].get<std::string>());
  EXPECT_DOUBLE_EQ(r.theta, hf["rope_theta"].get<double>());
  EXPECT_DOUBLE_EQ(r.factor, hf["rope_factor"].get<double>());
  if (r.type == "llama3") {
    EXPECT_DOUBLE_EQ(r.low_freq_factor, hf["rope_low_freq_factor"].get<double>());
    EXPECT_DOUBLE_EQ(r.high_freq_factor, hf["rope_high_freq_factor"].get<double>());
    EXPECT_EQ(r.original_max_position, hf["rope_original_max_position"].get<int64_t>());
  }
}

void expect_matches_transformers(const ModelConfig& c, const nlohmann::json& hf, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(c.model_type, hf["model_type"].get<std::string>());
  EXPECT_EQ(arch_name(c.arch), hf["model_type"].get<std::string>());
  EXPECT_EQ(c.vocab_size, hf["vocab_size"].get<int64_t>());
  EXPECT_EQ(c.hidden_size, hf["hidden_size"].get<int64_t>());
  EXPECT_EQ(c.intermediate_size, hf["intermediate_size"].get<int64_t>());
  EXPECT_EQ(c.n_layers, hf["num_hidden_layers"].get<int64_t>());
  EXPECT_EQ(c.n_heads, hf["num_attention_heads"].get<int64_t>());
  EXPECT_EQ(c.n_kv_heads, hf["num_key_value_heads"].get<int64_t>());
  EXPECT_EQ(c.head_dim, hf["head_dim"].get<int64_t>());
  EXPECT_EQ(c.max_position, hf["max_position_embeddings"].get<int64_t>());
  EXPECT_DOUBLE_EQ(c.rms_eps, hf["rms_norm_eps"].get<double>());
  expect_rope_matches(c.rope, hf);
  EXPECT_EQ(c.tie_word_embeddings, hf["tie_word_embeddings"].get<bool>());
  EXPECT_EQ(c.qkv_bias, hf["q_bias"].get<bool>());
  EXPECT_EQ(c.qkv_bias, hf["k_bias"].get<bool>());
  EXPECT_EQ(c.qkv_bias, hf["v_bias"].get<bool>());
  EXPECT_EQ(c.o_bias, hf["o_bias"].get<bool>());
  EXPECT_EQ(c.mlp_bias, hf["mlp_bias"].get<bool>());
  EXPECT_EQ(c.qk_norm, hf["qk_norm"].get<bool>());
  EXPECT_EQ(c.bos_id, hf["bos_token_id"].get<int32_t>());
  EXPECT_EQ(c.eos_ids, hf["eos_token_ids"].get<std::vector<int32_t>>());
}

class TinyModelConfig : public ::testing::TestWithParam<std::string> {};

TEST_P(TinyModelConfig, MatchesTransformers) {
  const auto facts = read_json(GetParam() + ".ref.json");
  expect_matches_transformers(ModelConfig::from_hf_dir(fixture_path(GetParam())), facts["hf_config"], GetParam());
}

INSTANTIATE_TEST_SUITE_P(Golden, TinyModelConfig, ::testing::ValuesIn(kTinyModels),
                         [](const auto& info) { return info.param; });

// llama_gqa's config with the rope settings written other ways (legacy rope_scaling, Llama 3
// without original_max_position_embeddings, rope_scaling beside rope_parameters), against the
// rope parameters transformers reads from each.
class RopeVariant : public ::testing::TestWithParam<std::string> {};

TEST_P(RopeVariant, MatchesTransformers) {
  const ModelConfig c = ModelConfig::from_hf_dir(fixture_path("rope_variants/" + GetParam()));
  expect_rope_matches(c.rope, read_json("rope_variants.ref.json")[GetParam()]);
}

INSTANTIATE_TEST_SUITE_P(Golden, RopeVariant,
                         ::testing::Values("legacy_rope_scaling", "llama3_without_original",
                                           "rope_scaling_and_parameters"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace dms::test
