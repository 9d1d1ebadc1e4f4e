// Broken copies of a tiny checkpoint (made by tests/reference/make_model_fixtures.py under
// models/bad/) must each fail with dms::Error naming the file and the field or tensor at fault.
#include <gtest/gtest.h>

#include "dms/model/config.h"
#include "dms/model/weights.h"
#include "dms/util/error.h"
#include "test_model_fixtures.h"

namespace dms::test {
namespace {

struct BadCase {
  std::string name;                   // folder under models/bad/
  std::vector<std::string> mentions;  // what the error message must contain
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

const std::vector<BadCase> kBadCases = {
    {"unsupported_arch", {"config.json", "gpt_neox"}},
    {"missing_field", {"config.json", "num_hidden_layers"}},
    {"wrong_type", {"config.json", "hidden_size"}},
    {"heads_not_divisible", {"config.json", "num_key_value_heads"}},
    {"unsupported_rope", {"config.json", "yarn"}},
    {"wrong_shape", {"model.safetensors", "model.layers.1.mlp.up_proj.weight", "[64, 128]", "[128, 64]"}},
    {"missing_weight", {"model.safetensors", "model.layers.0.self_attn.k_proj.weight"}},
    {"int_weight", {"model.safetensors", "model.layers.2.self_attn.o_proj.weight", "I32"}},
    {"missing_shard", {"model.safetensors.index.json", "model-absent.safetensors"}},
};

class BadCheckpoint : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadCheckpoint, FailsWithErrorNamingFileAndField) {
  const std::string dir = fixture_path("bad/" + GetParam().name);
  try {
    const ModelConfig config = ModelConfig::from_hf_dir(dir);
    load_hf_weights(dir, config, at::kFloat);
    FAIL() << "loading " << dir << " succeeded";
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const auto& m : GetParam().mentions)
      EXPECT_NE(message.find(m), std::string::npos) << "error does not mention '" << m << "': " << message;
  }
}

INSTANTIATE_TEST_SUITE_P(Loader, BadCheckpoint, ::testing::ValuesIn(kBadCases),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace dms::test
