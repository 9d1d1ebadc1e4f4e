#include "dms/kernels/cpu/quant_matmul.h"
#include "dms/model/loader.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "dms/format/gguf.h"
#include "dms/format/safetensors.h"
#include "dms/model/dms_adapter.h"
#include "dms/model/weights.h"
#include "dms/util/error.h"

namespace fs = std::filesystem;

namespace dms {
namespace {

CheckpointFormat detect_format(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (!fs::exists(fs::path(path) / "config.json"))
      fail(path, "directory has no config.json (expected a Hugging Face checkpoint directory)");
    return CheckpointFormat::HfDir;
  }
  if (!fs::exists(path, ec)) fail(path, "no such file or directory");
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  if (!in.read(magic, 4) || std::string(magic, 4) != "GGUF")
    fail(path, "not a GGUF file (no GGUF magic) and not a checkpoint directory");
  return CheckpointFormat::Gguf;
}

int64_t directory_bytes(const std::string& dir) {
  int64_t n = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".safetensors") n += static_cast<int64_t>(e.file_size());
  return n;
}

}  // namespace

std::string default_model_path() {
  if (const char* m = std::getenv("DMS_MODEL"); m && *m) return m;
  std::string cache;
  if (const char* c = std::getenv("DMS_CACHE"); c && *c) cache = c;
  else if (const char* home = std::getenv("HOME"); home && *home) cache = std::string(home) + "/.cache/dms";
  else fail("default model", "neither DMS_MODEL, DMS_CACHE nor HOME is set; pass --model");
  return cache + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

CheckpointInfo inspect_checkpoint(const std::string& path) {
  CheckpointInfo info;
  info.path = path;
  info.format = detect_format(path);
  if (info.format == CheckpointFormat::Gguf) {
    auto g = GgufFile::open(path);
    info.config = ModelConfig::from_gguf(*g);
    for (const auto& t : g->tensors()) {
      info.n_params += t.numel;
      ++info.tensor_types[ggml_type_name(t.type)];
      // As inference loads them in fp32: matrices the kernels read as stored, the rest as f32.
      const bool as_stored = t.shape.size() == 2 && cpu::quant_matmul_supports(t.type);
      info.weight_bytes += as_stored ? static_cast<int64_t>(t.nbytes) : t.numel * 4;
    }
    info.file_bytes = static_cast<int64_t>(fs::file_size(path));
  } else {
    info.config = ModelConfig::from_hf_dir(path);
    auto ckpt = SafetensorsCheckpoint::open_dir(path);
    for (const auto& [name, t] : ckpt.tensors()) {
      int64_t n = 1;
      for (int64_t d : t.shape) n *= d;
      info.n_params += n;
      info.weight_bytes += n * 4;
      ++info.tensor_types[st_dtype_name(t.dtype)];
    }
    info.file_bytes = directory_bytes(path);
  }
  return info;
}

void apply_dms_options(const DmsLoadOptions& options, const std::string& path, ModelConfig& config, Weights& weights) {
  if (!options.adapter_path.empty()) {
    const at::ScalarType dtype = weights.dtype();
    apply_dms_adapter(load_dms_adapter(options.adapter_path, config, dtype), config, weights);
  }
  options.overrides.apply(config.dms, "DMS options");
  if (config.dms.mode == DmsMode::Adapter && !weights.layers.empty() && !weights.layers[0].decision.proj.defined())
    fail(path, "DMS mode 'adapter' needs decision-head tensors (dms_proj_alpha), which this checkpoint does not "
               "have; pass an adapter file");
}

Model load_model(const std::string& path, at::ScalarType dtype, const DmsLoadOptions& dms, WeightStorage storage) {
  Model m;
  m.info.path = path;
  m.info.format = detect_format(path);
  Weights weights;
  if (m.info.format == CheckpointFormat::Gguf) {
    std::shared_ptr<const GgufFile> g = GgufFile::open(path);
    m.info.config = ModelConfig::from_gguf(*g);
    m.tokenizer = Tokenizer::from_gguf(*g);
    weights = load_gguf_weights(g, m.info.config, dtype, storage);
  } else {
    m.info.config = ModelConfig::from_hf_dir(path);
    m.tokenizer = Tokenizer::from_hf_dir(path);
    weights = load_hf_weights(path, m.info.config, dtype);
  }
  if (m.tokenizer->vocab_size() > m.info.config.vocab_size)
    fail(path, "tokenizer has " + std::to_string(m.tokenizer->vocab_size()) + " tokens but the model's vocab_size is " +
                   std::to_string(m.info.config.vocab_size));
  apply_dms_options(dms, path, m.info.config, weights);
  m.info.n_params = parameter_count(weights);
  m.info.weight_bytes = weight_bytes(weights);
  m.chat_template = ChatTemplate::from_source(m.tokenizer->chat_template_source(), *m.tokenizer);
  m.transformer = std::make_unique<Transformer>(m.info.config, std::move(weights));
  return m;
}

}  // namespace dms
