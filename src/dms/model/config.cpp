#include "dms/model/config.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "dms/format/gguf.h"
#include "dms/util/error.h"
#include "dms/util/text_file.h"

namespace dms {
namespace {

using nlohmann::json;

json parse_json(const std::string& text, const std::string& path) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(path, std::string("invalid JSON: ") + e.what());
  }
}

// Field readers that name the file and field when a value is missing or of the wrong kind.
struct JsonFields {
  const json& j;
  const std::string& path;

  bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }
  int64_t integer(const char* key) const {
    if (!has(key)) fail(path, std::string("missing field '") + key + "'");
    if (!j[key].is_number_integer()) fail(path, std::string("field '") + key + "' must be an integer");
    return j[key].get<int64_t>();
  }
  int64_t integer(const char* key, int64_t fallback) const { return has(key) ? integer(key) : fallback; }
  double number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    if (!j[key].is_number()) fail(path, std::string("field '") + key + "' must be a number");
    return j[key].get<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!j[key].is_boolean()) fail(path, std::string("field '") + key + "' must be true or false");
    return j[key].get<bool>();
  }
  std::string string(const char* key) const {
    if (!has(key)) fail(path, std::string("missing field '") + key + "'");
    if (!j[key].is_string()) fail(path, std::string("field '") + key + "' must be a string");
    return j[key].get<std::string>();
  }
};

void add_eos_ids(const json& v, const std::string& path, std::vector<int32_t>& out) {
  auto add = [&](const json& x) {
    if (!x.is_number_integer()) fail(path, "field 'eos_token_id' must be an integer or a list of them");
    int32_t id = x.get<int32_t>();
    if (std::find(out.begin(), out.end(), id) == out.end()) out.push_back(id);
  };
  if (v.is_null()) return;
  if (v.is_array()) {
    for (const auto& x : v) add(x);
  } else {
    add(v);
  }
}

// Rope settings: transformers 5 writes `rope_parameters` (with rope_theta inside); older
// checkpoints write `rope_theta` and `rope_scaling` at the top level. As in transformers,
// `rope_scaling` wins when both are present, and Llama 3 scaling without
// `original_max_position_embeddings` falls back to `max_position`.
RopeConfig parse_rope(const json& j, const std::string& path, int64_t max_position) {
  RopeConfig r;
  JsonFields top{j, path};
  r.theta = top.number("rope_theta", r.theta);
  if (top.number("partial_rotary_factor", 1.0) != 1.0)
    fail(path, "partial_rotary_factor other than 1 is not supported");
  const char* key = top.has("rope_scaling") ? "rope_scaling" : top.has("rope_parameters") ? "rope_parameters" : nullptr;
  if (!key) return r;
  const json& params = j[key];
  if (!params.is_object()) fail(path, std::string("field '") + key + "' must be an object");
  JsonFields p{params, path};
  r.theta = p.number("rope_theta", r.theta);
  if (p.has("rope_type")) r.type = p.string("rope_type");
  else if (p.has("type")) r.type = p.string("type");
  if (p.number("partial_rotary_factor", 1.0) != 1.0)
    fail(path, std::string("field '") + key + "': partial_rotary_factor other than 1 is not supported");
  if (r.type == "default") return r;
  if (r.type == "linear") {
    r.factor = p.number("factor", 1.0);
  } else if (r.type == "llama3") {
    r.factor = p.number("factor", 8.0);
    r.low_freq_factor = p.number("low_freq_factor", 1.0);
    r.high_freq_factor = p.number("high_freq_factor", 4.0);
    r.original_max_position = p.integer("original_max_position_embeddings", max_position);
  } else {
    fail(path, std::string("field '") + key + "': rope type '" + r.type +
                   "' is not supported (supported: default, linear, llama3)");
  }
  return r;
}

}  // namespace

std::string arch_name(Arch a) {
  switch (a) {
    case Arch::Llama: return "llama";
    case Arch::Qwen2: return "qwen2";
    case Arch::Qwen3: return "qwen3";
  }
  return "?";
}

ModelConfig ModelConfig::from_hf_dir(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  const std::string gen_path = (std::filesystem::path(dir) / "generation_config.json").string();
  const bool has_gen = std::filesystem::exists(gen_path);
  return from_hf_texts(read_text_file(path), path, has_gen ? std::optional(read_text_file(gen_path)) : std::nullopt, gen_path);
}

ModelConfig ModelConfig::from_hf_texts(const std::string& config_text, const std::string& path,
                                       const std::optional<std::string>& generation_config_text,
                                       const std::string& gen_path) {
  json j = parse_json(config_text, path);
  if (!j.is_object()) fail(path, "expected a JSON object");
  JsonFields f{j, path};
  ModelConfig c;
  c.model_type = f.string("model_type");
  if (c.model_type == "llama" || c.model_type == "mistral") c.arch = Arch::Llama;
  else if (c.model_type == "qwen2") c.arch = Arch::Qwen2;
  else if (c.model_type == "qwen3") c.arch = Arch::Qwen3;
  else fail(path, "architecture '" + c.model_type + "' is not supported (supported: llama, mistral, qwen2, qwen3)");

  c.vocab_size = f.integer("vocab_size");
  c.hidden_size = f.integer("hidden_size");
  c.intermediate_size = f.integer("intermediate_size");
  c.n_layers = f.integer("num_hidden_layers");
  c.n_heads = f.integer("num_attention_heads");
  c.n_kv_heads = f.integer("num_key_value_heads", c.n_heads);
  c.head_dim = c.n_heads > 0 ? f.integer("head_dim", c.hidden_size / c.n_heads) : 0;
  c.max_position = f.integer("max_position_embeddings", 2048);
  c.rms_eps = f.number("rms_norm_eps", 1e-6);
  c.rope = parse_rope(j, path, c.max_position);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  c.qk_norm = c.arch == Arch::Qwen3;
  if (c.arch == Arch::Qwen2) {
    c.qkv_bias = true;
  } else {
    c.qkv_bias = c.o_bias = f.boolean("attention_bias", false);
  }
  c.mlp_bias = f.boolean("mlp_bias", false);
  if (f.boolean("use_sliding_window", false))
    fail(path, "sliding-window attention (use_sliding_window: true) is not supported");
  if (f.has("hidden_act") && f.string("hidden_act") != "silu")
    fail(path, "hidden_act '" + f.string("hidden_act") + "' is not supported (only silu)");
  c.bos_id = static_cast<int32_t>(f.integer("bos_token_id", -1));
  if (j.contains("eos_token_id")) add_eos_ids(j["eos_token_id"], path, c.eos_ids);
  c.dms = DmsConfig::from_json(j, path);

  if (generation_config_text) {
    json g = parse_json(*generation_config_text, gen_path);
    if (!g.is_object()) fail(gen_path, "expected a JSON object");
    if (g.contains("eos_token_id")) add_eos_ids(g["eos_token_id"], gen_path, c.eos_ids);
  }
  c.validate(path);
  return c;
}

ModelConfig ModelConfig::from_gguf(const GgufFile& g) {
  ModelConfig c;
  const std::string a = g.get_string("general.architecture");
  c.model_type = a;
  if (a == "llama") c.arch = Arch::Llama;
  else if (a == "qwen2") c.arch = Arch::Qwen2;
  else if (a == "qwen3") c.arch = Arch::Qwen3;
  else fail(g.path(), "architecture '" + a + "' is not supported (supported: llama, qwen2, qwen3)");

  c.n_layers = g.get_int(a + ".block_count");
  c.hidden_size = g.get_int(a + ".embedding_length");
  c.intermediate_size = g.get_int(a + ".feed_forward_length");
  c.n_heads = g.get_int(a + ".attention.head_count");
  c.n_kv_heads = g.opt_int(a + ".attention.head_count_kv").value_or(c.n_heads);
  c.head_dim = g.opt_int(a + ".attention.key_length")
                   .value_or(c.n_heads > 0 ? c.hidden_size / c.n_heads : 0);
  c.max_position = g.opt_int(a + ".context_length").value_or(2048);
  c.rms_eps = g.get_float(a + ".attention.layer_norm_rms_epsilon");
  c.rope.theta = g.opt_float(a + ".rope.freq_base").value_or(10000.0);
  if (auto type = g.opt_string(a + ".rope.scaling.type"); type && *type != "none") {
    if (*type != "linear") fail(g.path(), "rope scaling type '" + *type + "' is not supported");
    c.rope.type = "linear";
    c.rope.factor = g.get_float(a + ".rope.scaling.factor");
  }
  if (auto v = g.opt_int(a + ".vocab_size")) c.vocab_size = *v;
  else c.vocab_size = static_cast<int64_t>(g.get_string_array("tokenizer.ggml.tokens").size());
  c.tie_word_embeddings = g.find_tensor("output.weight") == nullptr;
  c.qkv_bias = g.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.o_bias = g.find_tensor("blk.0.attn_output.bias") != nullptr;
  c.mlp_bias = g.find_tensor("blk.0.ffn_up.bias") != nullptr;
  c.qk_norm = c.arch == Arch::Qwen3;
  c.bos_id = static_cast<int32_t>(g.opt_int("tokenizer.ggml.bos_token_id").value_or(-1));
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"}) {
    if (auto id = g.opt_int(key)) {
      if (std::find(c.eos_ids.begin(), c.eos_ids.end(), *id) == c.eos_ids.end())
        c.eos_ids.push_back(static_cast<int32_t>(*id));
    }
  }
  c.validate(g.path());
  return c;
}

void ModelConfig::validate(const std::string& where) const {
  auto positive = [&](int64_t v, const char* name) {
    if (v <= 0) fail(where, std::string(name) + " must be positive (got " + std::to_string(v) + ")");
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(n_layers, "num_hidden_layers");
  positive(n_heads, "num_attention_heads");
  positive(n_kv_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  if (n_heads % n_kv_heads != 0)
    fail(where, "num_attention_heads (" + std::to_string(n_heads) +
                    ") is not a multiple of num_key_value_heads (" + std::to_string(n_kv_heads) + ")");
  if (head_dim % 2 != 0) fail(where, "head_dim must be even for rotary embeddings");
  if (!(rms_eps > 0)) fail(where, "rms_norm_eps must be positive");
  if (!(rope.theta > 0)) fail(where, "rope_theta must be positive");
}

}  // namespace dms
