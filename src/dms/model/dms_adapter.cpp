#include "dms/model/dms_adapter.h"

#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "dms/format/safetensors.h"
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
  try {
    json j = json::parse(metadata(f, key));
    if (!j.is_object()) fail(f.path(), "metadata '" + key + "' is not a JSON object");
    return j;
  } catch (const json::exception& e) {
    fail(f.path(), "metadata '" + key + "' is not valid JSON: " + e.what());
  }
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

at::Tensor read_tensor(const StTensor& t, at::ScalarType dtype) {
  at::ScalarType stored;
  switch (t.dtype) {
    case StDtype::F32: stored = at::kFloat; break;
    case StDtype::BF16: stored = at::kBFloat16; break;
    case StDtype::F16: stored = at::kHalf; break;
    default: fail(t.file, "tensor '" + t.name + "' has dtype " + st_dtype_name(t.dtype) + ", expected F32, BF16 or F16");
  }
  // A copy: the file is closed after loading, and its data need not be aligned.
  at::Tensor out = at::empty(t.shape, stored);
  std::memcpy(out.data_ptr(), t.data, t.nbytes);
  return out.to(dtype);
}

StTensorOut to_output(const std::string& name, at::Tensor t) {
  StDtype dtype = StDtype::F32;
  if (t.scalar_type() == at::kBFloat16) dtype = StDtype::BF16;
  else if (t.scalar_type() == at::kHalf) dtype = StDtype::F16;
  else t = t.to(at::kFloat);
  t = t.cpu().contiguous();
  StTensorOut out{name, dtype, t.sizes().vec(), {}};
  const auto* bytes = static_cast<const uint8_t*>(t.data_ptr());
  out.bytes.assign(bytes, bytes + t.numel() * t.element_size());
  return out;
}

}  // namespace

DmsAdapter load_dms_adapter(const std::string& path, const ModelConfig& base, at::ScalarType dtype) {
  auto file = SafetensorsFile::open(path);
  if (metadata(*file, "format") != kFormat)
    fail(path, "metadata 'format' is '" + metadata(*file, "format") + "', expected '" + kFormat + "'");
  if (metadata(*file, "version") != kVersion)
    fail(path, "adapter version '" + metadata(*file, "version") + "' is not supported (expected " + kVersion + ")");
  check_base(*file, base);

  DmsAdapter a;
  a.config = DmsConfig::from_json(metadata_json(*file, "dms_config"), path + ": metadata 'dms_config'");
  if (a.config.mode != DmsMode::Adapter)
    fail(path, "metadata 'dms_config': dms_separate_alpha must be true in an adapter");

  std::set<std::string> expected;
  for (int64_t i = 0; i < base.n_layers; ++i) {
    DecisionHeadWeights layer;
    for (const auto& want : decision_head_tensors(base, i)) {
      expected.insert(want.name);
      auto it = file->tensors().find(want.name);
      if (it == file->tensors().end()) fail(path, "missing tensor '" + want.name + "'");
      if (it->second.shape != want.shape)
        fail(path, "tensor '" + want.name + "' has shape " + shape_str(it->second.shape) + ", expected " +
                       shape_str(want.shape));
      layer.*want.member = read_tensor(it->second, dtype);
    }
    a.layers.push_back(std::move(layer));
  }
  for (const auto& [name, t] : file->tensors())
    if (!expected.count(name))
      fail(path, "unexpected tensor '" + name + "' (an adapter for this model holds only the dms_proj_alpha " +
                     "tensors of layers 0.." + std::to_string(base.n_layers - 1) + ")");
  return a;
}

void save_dms_adapter(const std::string& path, const ModelConfig& base, const DmsAdapter& adapter) {
  if (adapter.config.mode != DmsMode::Adapter) fail(path, "cannot save an adapter whose DMS mode is not 'adapter'");
  adapter.config.validate(path);
  if (static_cast<int64_t>(adapter.layers.size()) != base.n_layers)
    fail(path, "adapter has " + std::to_string(adapter.layers.size()) + " layers, the base model " +
                   std::to_string(base.n_layers));
  std::vector<StTensorOut> tensors;
  for (int64_t i = 0; i < base.n_layers; ++i) {
    if (adapter.layers[i].bias.defined() && !base.qkv_bias)
      fail(path, "layer " + std::to_string(i) + " has a dms_proj_alpha bias, but the base's attention has none");
    for (const auto& want : decision_head_tensors(base, i)) {
      const at::Tensor& t = adapter.layers[i].*want.member;
      if (!t.defined()) fail(path, "tensor '" + want.name + "' is missing");
      if (t.sizes().vec() != want.shape)
        fail(path, "tensor '" + want.name + "' has shape " + shape_str(t.sizes().vec()) + ", expected " +
                       shape_str(want.shape));
      tensors.push_back(to_output(want.name, t));
    }
  }
  save_safetensors(path, tensors,
                   {{"format", kFormat},
                    {"version", kVersion},
                    {"dms_config", adapter.config.to_json().dump()},
                    {"base_model", base_facts(base).dump()}});
}

void apply_dms_adapter(const DmsAdapter& adapter, ModelConfig& config, Weights& weights) {
  if (adapter.layers.size() != weights.layers.size())
    fail("DMS adapter", "has " + std::to_string(adapter.layers.size()) + " layers, the model " +
                            std::to_string(weights.layers.size()));
  for (size_t i = 0; i < weights.layers.size(); ++i) weights.layers[i].decision = adapter.layers[i];
  config.dms = adapter.config;
}

}  // namespace dms
