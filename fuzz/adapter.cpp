// A DMS adapter file (safetensors with the dms-adapter metadata) checked against a base model:
// a small Qwen2 (attention biases, so the bias tensors are read too).
#include "dms/model/dms_adapter_file.h"
#include "fuzz_common.h"

using namespace dms;

namespace {
const ModelConfig& base() {
  static const ModelConfig c = ModelConfig::from_hf_texts(
      R"({"model_type": "qwen2", "vocab_size": 64, "hidden_size": 8, "intermediate_size": 16,
          "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1})",
      "base/config.json", std::nullopt, "");
  return c;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::expect_ok_or_error([&] {
    const auto file = SafetensorsFile::parse(MappedFile::copy_of("adapter.safetensors", data, size));
    const DmsAdapterFile adapter = read_dms_adapter_file(*file, base());
    adapter.config.validate("adapter.safetensors");
    for (const auto& layer : adapter.layers)
      for (const StTensor* t : layer) fuzz::g_sink = fuzz::touch_bytes(t->data, t->nbytes);
  });
  return 0;
}
