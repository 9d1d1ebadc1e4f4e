#include "dms/model/dms_adapter.h"

#include <cstring>

#include "dms/format/safetensors.h"
#include "dms/model/dms_adapter_file.h"
#include "dms/util/error.h"

namespace dms {
namespace {

at::Tensor read_tensor(const StTensor& t, at::ScalarType dtype) {
  const at::ScalarType stored = t.dtype == StDtype::BF16 ? at::kBFloat16 : t.dtype == StDtype::F16 ? at::kHalf : at::kFloat;
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
  const DmsAdapterFile checked = read_dms_adapter_file(*file, base);
  DmsAdapter a;
  a.config = checked.config;
  for (int64_t i = 0; i < base.n_layers; ++i) {
    DecisionHeadWeights layer;
    const auto parts = decision_head_tensors(base, i);
    for (size_t k = 0; k < parts.size(); ++k) layer.*parts[k].member = read_tensor(*checked.layers[i][k], dtype);
    a.layers.push_back(std::move(layer));
  }
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
      check_decision_head_shape(path, want.name, want.shape, t.sizes().vec());
      tensors.push_back(to_output(want.name, t));
    }
  }
  save_safetensors(path, tensors, dms_adapter_metadata(base, adapter.config));
}

void apply_dms_adapter(const DmsAdapter& adapter, ModelConfig& config, Weights& weights) {
  if (adapter.layers.size() != weights.layers.size())
    fail("DMS adapter", "has " + std::to_string(adapter.layers.size()) + " layers, the model " +
                            std::to_string(weights.layers.size()));
  for (size_t i = 0; i < weights.layers.size(); ++i) weights.layers[i].decision = adapter.layers[i];
  config.dms = adapter.config;
}

}  // namespace dms
