// Opens a checkpoint by path: a Hugging Face directory (config.json + safetensors +
// tokenizer.json) or a GGUF file. The one place that knows which formats exist.
#pragma once
#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>

#include "dms/model/config.h"
#include "dms/model/transformer.h"
#include "dms/tokenizer/chat_template.h"
#include "dms/tokenizer/tokenizer.h"

namespace dms {

enum class CheckpointFormat { HfDir, Gguf };

// What can be learnt from a checkpoint without loading its weights.
struct CheckpointInfo {
  std::string path;
  CheckpointFormat format;
  ModelConfig config;
  int64_t n_params = 0;                        // elements of every stored tensor
  std::map<std::string, int64_t> tensor_types; // stored type name -> tensor count
  int64_t file_bytes = 0;
  int64_t weight_bytes = 0;                    // held in memory: by inference in fp32 (inspect_checkpoint),
                                               // by the weights as loaded (load_model)
};

struct Model {
  CheckpointInfo info;
  std::shared_ptr<Tokenizer> tokenizer;
  ChatTemplate chat_template;
  std::unique_ptr<Transformer> transformer;
};

// The model `dms` runs when none is named: $DMS_MODEL if set, else the default model
// (SmolLM2-135M-Instruct) that scripts/fetch-default-model puts in the cache.
std::string default_model_path();

// Throws Error naming the path when it is neither a checkpoint directory nor a GGUF file.
CheckpointInfo inspect_checkpoint(const std::string& path);
// How to run the checkpoint's DMS decision heads, when it differs from what it says itself.
struct DmsLoadOptions {
  std::string adapter_path;  // a Mode B adapter file (dms_adapter.h) to apply; empty: none
  DmsOverrides overrides;    // applied last, over the checkpoint's or the adapter's settings
};

// Applies `options` to the config and weights loaded from checkpoint `path`: the adapter, then the
// overrides. Throws Error when the model ends up in DmsMode::Adapter without decision heads.
void apply_dms_options(const DmsLoadOptions& options, const std::string& path, ModelConfig& config, Weights& weights);

// Loads weights in `dtype` (at::kFloat or at::kBFloat16) plus tokenizer and chat template, and
// applies `dms`. A GGUF file's quantized and 16-bit matrices stay as stored unless `storage` is
// Float (training).
Model load_model(const std::string& path, at::ScalarType dtype, const DmsLoadOptions& dms = {},
                 WeightStorage storage = WeightStorage::AsStored);

}  // namespace dms
