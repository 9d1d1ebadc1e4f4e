// Broken copies of a tiny checkpoint, as a Hugging Face directory or a GGUF file (made by
// tests/reference/make_model_fixtures.py under models/bad/), must each fail with dms::Error
// naming the file and the field, key or tensor at fault.
#include <gtest/gtest.h>

#include <algorithm>

#include "dms/format/gguf.h"
#include "dms/model/config.h"
#include "dms/model/weights.h"
#include "dms/util/error.h"
#include "test_model_fixtures.h"

namespace dms::test {
namespace {

struct BadCase {
  std::string name;                   // directory or .gguf file under models/bad/
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
    {"gguf_unsupported_arch.gguf", {"gguf_unsupported_arch.gguf", "gptneox"}},
    {"gguf_missing_key.gguf", {"gguf_missing_key.gguf", "llama.block_count"}},
    {"gguf_wrong_type_key.gguf", {"gguf_wrong_type_key.gguf", "llama.embedding_length"}},
    {"gguf_missing_tensor.gguf", {"gguf_missing_tensor.gguf", "blk.1.ffn_down.weight"}},
    {"gguf_wrong_shape.gguf", {"gguf_wrong_shape.gguf", "blk.0.ffn_up.weight", "[64, 128]", "[128, 64]"}},
};

void load(const std::string& path) {
  if (path.ends_with(".gguf")) {
    std::shared_ptr<const GgufFile> gguf = GgufFile::open(path);
    load_gguf_weights(gguf, ModelConfig::from_gguf(*gguf), at::kFloat);
  } else {
    load_hf_weights(path, ModelConfig::from_hf_dir(path), at::kFloat);
  }
}

class BadCheckpoint : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadCheckpoint, FailsWithErrorNamingFileAndField) {
  const std::string path = fixture_path("bad/" + GetParam().name);
  try {
    load(path);
    FAIL() << "loading " << path << " succeeded";
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const auto& m : GetParam().mentions)
      EXPECT_NE(message.find(m), std::string::npos) << "error does not mention '" << m << "': " << message;
  }
}

INSTANTIATE_TEST_SUITE_P(Loader, BadCheckpoint, ::testing::ValuesIn(kBadCases), [](const auto& info) {
  std::string name = info.param.name;
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
});

}  // namespace
}  // namespace dms::test
