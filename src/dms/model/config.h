// What a checkpoint says about the transformer's shape, read from a Hugging Face config.json
// or from GGUF metadata. One struct for every supported family.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dms/model/dms_config.h"

namespace dms {

class GgufFile;

enum class Arch { Llama, Qwen2, Qwen3 };

struct RopeConfig {
  std::string type = "default";   // "default", "linear", "llama3"
  double theta = 10000.0;
  double factor = 1.0;            // linear and llama3
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_max_position = 8192;  // llama3
};

struct ModelConfig {
  Arch arch = Arch::Llama;
  std::string model_type;          // as the checkpoint names it: "llama", "qwen2", "qwen3"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position = 0;        // context length the model was trained for
  double rms_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;           // Qwen2, or Llama with attention_bias
  bool o_bias = false;             // Llama with attention_bias
  bool mlp_bias = false;           // Llama with mlp_bias
  bool qk_norm = false;            // Qwen3: per-head RMSNorm on q and k before RoPE
  std::vector<int32_t> eos_ids;    // from config.json / generation_config.json / GGUF
  int32_t bos_id = -1;
  DmsConfig dms;                   // decision heads: from config.json's dms_* fields; GGUF has none

  // Throws Error naming the file and field for missing, mistyped or inconsistent values.
  static ModelConfig from_hf_dir(const std::string& dir);
  // The same from the texts of config.json and generation_config.json (nullopt: no such file).
  static ModelConfig from_hf_texts(const std::string& config_json, const std::string& config_path,
                                   const std::optional<std::string>& generation_config_json,
                                   const std::string& generation_config_path);
  static ModelConfig from_gguf(const GgufFile& gguf);

  int64_t group_size() const { return n_heads / n_kv_heads; }
  // Bytes of K and V for one token across all layers at `bytes_per_elem`.
  int64_t kv_bytes_per_token(int64_t bytes_per_elem) const {
    return 2 * n_layers * n_kv_heads * head_dim * bytes_per_elem;
  }
  // Checks the invariants the forward relies on; `where` names the source in errors.
  void validate(const std::string& where) const;
};

std::string arch_name(Arch a);

}  // namespace dms
