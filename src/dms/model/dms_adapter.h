// Mode B decision heads as a separate file, applied to a base checkpoint at load
// (`--dms-adapter PATH`), so a retrofit ships megabytes instead of a whole model.
//
// The format is one safetensors file:
//   tensors       model.layers.{i}.self_attn.dms_proj_alpha_norm.weight  [H]
//                 model.layers.{i}.self_attn.dms_proj_alpha.weight       [n_kv, H]
//                 model.layers.{i}.self_attn.dms_proj_alpha.bias         [n_kv], only for a base
//                                                                        whose attention has biases
//                 for every layer i and nothing else; F32, BF16 or F16
//   __metadata__  format      "dms-adapter"
//                 version     "1"
//                 dms_config  a JSON object with config.json's dms_* fields (dms_separate_alpha true)
//                 base_model  a JSON object with the shape facts of the base it was trained on:
//                             architecture, hidden_size, num_hidden_layers, num_attention_heads,
//                             num_key_value_heads, head_dim, attention_bias
// An adapter whose base facts differ from the model it is applied to is refused.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "dms/model/config.h"
#include "dms/model/weights.h"

namespace dms {

struct DmsAdapter {
  DmsConfig config;                         // mode DmsMode::Adapter
  std::vector<DecisionHeadWeights> layers;  // one per base layer, in compute dtype
};

// Reads `path` and checks that it fits `base`; errors name the file and the metadata field or
// tensor at fault.
DmsAdapter load_dms_adapter(const std::string& path, const ModelConfig& base, at::ScalarType dtype);

// Writes the adapter for `base` atomically. Tensors are stored in their dtype when it is F32,
// BF16 or F16, else as F32; their shapes are checked against `base` first.
void save_dms_adapter(const std::string& path, const ModelConfig& base, const DmsAdapter& adapter);

// Puts the adapter's decision heads into `weights` and its settings into `config.dms`.
void apply_dms_adapter(const DmsAdapter& adapter, ModelConfig& config, Weights& weights);

}  // namespace dms
