// A retrofitted model (every weight trained) as a Hugging Face checkpoint directory that `dms`
// and transformers-style loaders read: the base's config.json with the student's dms_* fields
// and torch_dtype, model.safetensors, and the base's tokenizer and generation files copied.
#pragma once
#include <string>

#include "dms/model/config.h"
#include "dms/model/weights.h"

namespace dms {

// `base_dir` is the Hugging Face directory the run started from. Writes into `out_dir` (created;
// files written atomically). Throws Error naming the file at fault.
void export_hf_checkpoint(const std::string& base_dir, const ModelConfig& student, const Weights& weights,
                          const std::string& out_dir);

}  // namespace dms
