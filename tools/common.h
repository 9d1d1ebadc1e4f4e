// Options shared by the subcommands that run a model, and the code that applies them.
#pragma once
#include <string>

#include "args.h"
#include "dms/engine/generator.h"
#include "dms/model/loader.h"

namespace dms::cli {

// --model, --dtype, --threads
void add_model_options(Args& args);
// --max-tokens, --temperature, --top-k, --top-p, --min-p, --seed, --stop, --ignore-eos
void add_generation_options(Args& args);

// Sets the thread count and loads the model named by --model (or the default one).
Model load_model_from_args(const Args& args);
// Generation settings from the options; the model's EOS ids stop generation unless --ignore-eos.
GenerationParams generation_params_from_args(const Args& args, const Model& model);

// "12 tokens in 0.05 s (240.0 tok/s)"
std::string rate(int64_t tokens, double seconds);

}  // namespace dms::cli
