#include "common.h"

#include <ATen/Parallel.h>

#include <cstdio>
#include <random>
#include <thread>

namespace dms::cli {

void add_model_options(Args& args) {
  args.option("model", "PATH", "Hugging Face checkpoint directory or GGUF file", "the default model, SmolLM2-135M-Instruct")
      .option("dtype", "f32|bf16", "compute and KV cache dtype", "f32")
      .option("threads", "N", "CPU threads", "all cores");
}

void add_generation_options(Args& args) {
  args.option("max-tokens", "N", "most tokens to generate", "256")
      .option("temperature", "T", "sampling temperature; 0 decodes greedily", "0.7")
      .option("top-k", "K", "sample among the K most likely tokens; 0: off", "0")
      .option("top-p", "P", "sample among the most likely tokens holding mass P; 1: off", "0.9")
      .option("min-p", "P", "drop tokens less likely than P times the most likely one; 0: off", "0.05")
      .option("seed", "N", "random seed (printed with the statistics, for reruns)", "random")
      .repeated("stop", "TEXT", "stop when TEXT is generated (may be repeated)")
      .flag("ignore-eos", "keep generating past the model's end-of-sequence tokens");
}

Model load_model_from_args(const Args& args) {
  if (args.has("threads")) {
    const int64_t n = args.integer("threads");
    if (n < 1) throw UsageError("--threads: must be at least 1");
    at::set_num_threads(static_cast<int>(n));
  } else {
    at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  }
  const std::string dtype = args.str("dtype");
  at::ScalarType st;
  if (dtype == "f32") st = at::kFloat;
  else if (dtype == "bf16") st = at::kBFloat16;
  else throw UsageError("--dtype: expected f32 or bf16, got '" + dtype + "'");
  const std::string path = args.has("model") ? args.str("model") : default_model_path();
  return load_model(path, st);
}

GenerationParams generation_params_from_args(const Args& args, const Model& model) {
  GenerationParams p;
  p.max_tokens = args.integer("max-tokens");
  if (p.max_tokens < 1) throw UsageError("--max-tokens: must be at least 1");
  p.sampling.temperature = args.number("temperature");
  p.sampling.top_k = args.integer("top-k");
  p.sampling.top_p = args.number("top-p");
  p.sampling.min_p = args.number("min-p");
  if (args.has("seed")) {
    const int64_t seed = args.integer("seed");
    if (seed < 0) throw UsageError("--seed: must be >= 0");
    p.sampling.seed = static_cast<uint64_t>(seed);
  } else {
    p.sampling.seed = std::random_device{}() & 0x7fffffff;
  }
  try {
    p.sampling.validate();
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  p.stop_strings = args.all("stop");
  if (!args.has("ignore-eos")) p.stop_ids = model.info.config.eos_ids;
  return p;
}

std::string rate(int64_t tokens, double seconds) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%lld tokens in %.2f s (%.1f tok/s)", static_cast<long long>(tokens), seconds,
                seconds > 0 ? tokens / seconds : 0.0);
  return buf;
}

}  // namespace dms::cli
