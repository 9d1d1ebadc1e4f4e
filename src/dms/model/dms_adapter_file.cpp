#include "dms/model/dms_adapter_file.h"

#include <nlohmann/json.hpp>
#include <set>

#include "dms/util/error.h"

namespace dms {
namespace {

using nlohmann::json;

constexpr const char* kFormat = "dms-adapter";
constexpr const char* kVersion = "1";

json base_facts(const ModelConfig& c) {
  return {
      {"architecture", arch_name(c.arch)},
      {"hidden_size", c.hidden_size},
      {"num_hidden_layers", c.n_layers},
      {"num_attention_heads", c.n_heads},
      {"num_key_value_heads", c.n_kv_heads},
      {"head_dim", c.head_dim},
      {"attention_bias", c.qkv_bias},
  };
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

const std::string& metadata(const SafetensorsFile& f, const std::string& key) {
  auto it = f.metadata().find(key);
  if (it == f.metadata().end()) fail(f.path(), "metadata has no '" + key + "' (not a DMS adapter?)");
  return it->second;
}

json metadata_json(const SafetensorsFile& f, const std::string& key) {
  json j;
  try {
    j = json::parse(metadata(f, key));
  } catch (const json::exception& e) {
    fail(f.path(), "metadata '" + key + "' is not valid JSON: " + e.what());
  }
  if (!j.is_object()) fail(f.path(), "metadata '" + key + "' is not a JSON object");
  return j;
}

// Every shape fact the adapter records must equal the base's.
void check_base(const SafetensorsFile& f, const ModelConfig& base) {
  const json recorded = metadata_json(f, "base_model");
  const json facts = base_facts(base);
  for (const auto& [key, expected] : facts.items()) {
    if (!recorded.contains(key)) fail(f.path(), "metadata 'base_model' has no '" + key + "'");
    if (recorded[key] != expected)
      fail(f.path(), "adapter is for a base model with " + key + " " + recorded[key].dump() +
                         ", but this model has " + expected.dump());
  }
}

}  // namespace

std::vector<DecisionHeadTensorSpec> decision_head_specs(const ModelConfig& c, int64_t layer) {
  const std::string p = "model.layers." + std::to_string(layer) + ".self_attn.dms_proj_alpha";
  std::vector<DecisionHeadTensorSpec> out = {
      {p + "_norm.weight", {c.hidden_size}},
      {p + ".weight", {c.n_kv_heads, c.hidden_size}},
  };
  // As the reference builds it: nn.Linear(hidden, n_kv, bias=attention_bias).
  if (c.qkv_bias) out.push_back({p + ".bias", {c.n_kv_heads}});
  return out;
}

void check_decision_head_shape(const std::string& path, const std::string& name, const std::vector<int64_t>& expected,
                               const std::vector<int64_t>& shape) {
  if (shape != expected)
    fail(path, "tensor '" + name + "' has shape " + shape_str(shape) + ", expected " + shape_str(expected));
}

DmsAdapterFile read_dms_adapter_file(const SafetensorsFile& file, const ModelConfig& base) {
  const std::string& path = file.path();
  if (metadata(file, "format") != kFormat)
    fail(path, "metadata 'format' is '" + metadata(file, "format") + "', expected '" + kFormat + "'");
  if (metadata(file, "version") != kVersion)
    fail(path, "adapter version '" + metadata(file, "version") + "' is not supported (expected " + kVersion + ")");
  check_base(file, base);

  DmsAdapterFile a;
  a.config = DmsConfig::from_json(metadata_json(file, "dms_config"), path + ": metadata 'dms_config'");
  if (a.config.mode != DmsMode::Adapter)
    fail(path, "metadata 'dms_config': dms_separate_alpha must be true in an adapter");

  std::set<std::string> expected;
  for (int64_t i = 0; i < base.n_layers; ++i) {
    auto& layer = a.layers.emplace_back();
    for (const auto& want : decision_head_specs(base, i)) {
      expected.insert(want.name);
      auto it = file.tensors().find(want.name);
      if (it == file.tensors().end()) fail(path, "missing tensor '" + want.name + "'");
      const StTensor& t = it->second;
      check_decision_head_shape(path, want.name, want.shape, t.shape);
      if (t.dtype != StDtype::F32 && t.dtype != StDtype::BF16 && t.dtype != StDtype::F16)
        fail(path, "tensor '" + want.name + "' has dtype " + st_dtype_name(t.dtype) + ", expected F32, BF16 or F16");
      layer.push_back(&t);
    }
  }
  for (const auto& [name, t] : file.tensors())
    if (!expected.count(name))
      fail(path, "unexpected tensor '" + name + "' (an adapter for this model holds only the dms_proj_alpha " +
                     "tensors of layers 0.." + std::to_string(base.n_layers - 1) + ")");
  return a;
}

std::map<std::string, std::string> dms_adapter_metadata(const ModelConfig& base, const DmsConfig& config) {
  return {{"format", kFormat},
          {"version", kVersion},
          {"dms_config", config.to_json().dump()},
          {"base_model", base_facts(base).dump()}};
}

}  // namespace dms
