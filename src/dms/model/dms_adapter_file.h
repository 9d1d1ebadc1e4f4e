// The half of reading a DMS adapter (dms_adapter.h) that needs no libtorch: the metadata and the
// tensor table of the safetensors file, checked against the base model it is applied to. The
// tensor bytes are checked to lie in the file by the safetensors reader; dms_adapter.cpp copies
// them into tensors.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dms/format/safetensors.h"
#include "dms/model/config.h"

namespace dms {

// The tensors of layer `layer`'s decision head for `config`, in the order norm weight, projection
// weight, projection bias (only for a base whose attention has biases): Hugging Face name, shape.
struct DecisionHeadTensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};
std::vector<DecisionHeadTensorSpec> decision_head_specs(const ModelConfig& config, int64_t layer);

// Fails naming `path` and tensor `name` when `shape` is not `expected` (read and save alike).
void check_decision_head_shape(const std::string& path, const std::string& name, const std::vector<int64_t>& expected,
                               const std::vector<int64_t>& shape);

struct DmsAdapterFile {
  DmsConfig config;  // mode DmsMode::Adapter
  // Per base layer, the tensors of decision_head_specs in its order (F32, BF16 or F16).
  std::vector<std::vector<const StTensor*>> layers;
};

// Checks the format, version, base facts, settings, and that the tensors are exactly those of
// decision_head_specs with their shapes and a float dtype; errors name the file and the metadata
// field or tensor at fault. The result points into `file`.
DmsAdapterFile read_dms_adapter_file(const SafetensorsFile& file, const ModelConfig& base);

// The metadata save_dms_adapter writes for `base` and `config`.
std::map<std::string, std::string> dms_adapter_metadata(const ModelConfig& base, const DmsConfig& config);

}  // namespace dms
