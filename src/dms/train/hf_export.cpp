#include "dms/train/hf_export.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dms/format/safetensors.h"
#include "dms/util/error.h"

namespace dms {
namespace {

namespace fs = std::filesystem;

// Files of a Hugging Face directory that describe the tokenizer and generation defaults.
constexpr const char* kCopied[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                   "generation_config.json", "vocab.json", "merges.txt", "chat_template.jinja",
                                   "tokenizer.model", "added_tokens.json"};

void write_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) fail(tmp.string(), "write failed");
  }
  fs::rename(tmp, path);
}

}  // namespace

void export_hf_checkpoint(const std::string& base_dir, const ModelConfig& student, const Weights& weights,
                          const std::string& out_dir) {
  const fs::path base(base_dir), out(out_dir);
  const fs::path config_path = base / "config.json";
  nlohmann::json config;
  {
    std::ifstream in(config_path);
    if (!in) fail(config_path.string(), "cannot read the base model's config");
    try {
      config = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      fail(config_path.string(), std::string("not valid JSON: ") + e.what());
    }
  }
  fs::create_directories(out);
  const nlohmann::json dms_fields = student.dms.to_json();
  for (const auto& [key, value] : dms_fields.items()) config[key] = value;
  const auto dtype = weights.dtype();
  config["torch_dtype"] = dtype == at::kBFloat16 ? "bfloat16" : dtype == at::kDouble ? "float64" : "float32";

  std::vector<StTensorOut> tensors;
  Weights w = weights;
  for (const auto& n : named_weights(w)) {
    const at::Tensor t = n.tensor->detach().cpu().contiguous();
    const StDtype st = t.scalar_type() == at::kBFloat16 ? StDtype::BF16
                       : t.scalar_type() == at::kDouble ? StDtype::F64
                                                        : StDtype::F32;
    const at::Tensor stored = st == StDtype::F32 ? t.to(at::kFloat) : t;
    StTensorOut o{n.name, st, stored.sizes().vec(), std::vector<uint8_t>(stored.nbytes())};
    std::memcpy(o.bytes.data(), stored.data_ptr(), stored.nbytes());
    tensors.push_back(std::move(o));
  }
  save_safetensors((out / "model.safetensors").string(), tensors, {{"format", "pt"}});
  for (const char* name : kCopied)
    if (fs::is_regular_file(base / name)) fs::copy_file(base / name, out / name, fs::copy_options::overwrite_existing);
  write_atomically(out / "config.json", config.dump(2) + "\n");
}

}  // namespace dms
