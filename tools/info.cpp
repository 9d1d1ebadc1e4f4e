#include <cstdio>
#include <nlohmann/json.hpp>

#include "args.h"
#include "common.h"
#include "commands.h"
#include "dms/cache/cache_sizing.h"
#include "dms/kernels/cpu/kv_quant.h"
#include "dms/model/loader.h"

namespace dms::cli {

int run_info(int argc, char** argv) {
  Args args("info", "[options] [MODEL]",
            "Describes a checkpoint (Hugging Face directory or GGUF file; the default model when absent)\n"
            "without loading its weights.");
  args.flag("json", "print JSON instead of a table").positionals(1);
  if (!args.parse(argc, argv)) return 0;
  const std::string path = args.positional().empty() ? default_model_path() : args.positional()[0];
  const CheckpointInfo info = inspect_checkpoint(path);
  const ModelConfig& c = info.config;

  std::string types;
  for (const auto& [name, count] : info.tensor_types) types += (types.empty() ? "" : ", ") + name + " x" + std::to_string(count);
  nlohmann::json j = {
      {"path", info.path},
      {"format", info.format == CheckpointFormat::Gguf ? "gguf" : "hf"},
      {"architecture", arch_name(c.arch)},
      {"parameters", info.n_params},
      {"tensor_types", info.tensor_types},
      {"file_bytes", info.file_bytes},
      {"weight_bytes", info.weight_bytes},
      {"layers", c.n_layers},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"attention_heads", c.n_heads},
      {"kv_heads", c.n_kv_heads},
      {"head_dim", c.head_dim},
      {"vocab_size", c.vocab_size},
      {"context_length", c.max_position},
      {"rope_theta", c.rope.theta},
      {"rope_scaling", c.rope.type},
      {"tied_embeddings", c.tie_word_embeddings},
      {"dms", c.dms.mode == DmsMode::Off ? nlohmann::json(nullptr) : c.dms.to_json()},
      {"kv_bytes_per_token",
       {{"f32", c.kv_bytes_per_token(4)}, {"bf16", c.kv_bytes_per_token(2)}, {"q8", kv_bytes_per_token(c, cpu::kQ8)}}},
  };
  if (args.has("json")) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  auto row = [](const char* k, const std::string& v) { std::printf("%-20s %s\n", k, v.c_str()); };
  char params[32];
  std::snprintf(params, sizeof params, "%.1f M", info.n_params / 1e6);
  row("path", info.path);
  row("format", std::string(info.format == CheckpointFormat::Gguf ? "GGUF" : "Hugging Face safetensors") + ", " +
                    human_bytes(static_cast<double>(info.file_bytes)));
  row("architecture", arch_name(c.arch));
  row("parameters", params);
  row("weights in memory", human_bytes(static_cast<double>(info.weight_bytes)) + " (inference, f32 compute)");
  row("stored types", types);
  row("layers", std::to_string(c.n_layers));
  row("hidden size", std::to_string(c.hidden_size) + " (MLP " + std::to_string(c.intermediate_size) + ")");
  row("attention heads", std::to_string(c.n_heads) + " query, " + std::to_string(c.n_kv_heads) + " KV, dim " +
                             std::to_string(c.head_dim));
  row("vocabulary", std::to_string(c.vocab_size));
  row("context length", std::to_string(c.max_position));
  char rope[64];
  std::snprintf(rope, sizeof rope, "theta %g, scaling %s", c.rope.theta, c.rope.type.c_str());
  row("rope", rope);
  row("tied embeddings", c.tie_word_embeddings ? "yes" : "no");
  if (c.dms.mode != DmsMode::Off) {
    char dms[160];
    std::snprintf(dms, sizeof dms, "%s, window %lld, scale %g, offset %g, per %s%s", dms_mode_name(c.dms.mode).c_str(),
                  static_cast<long long>(c.dms.window), c.dms.alpha_scale, c.dms.alpha_offset,
                  c.dms.per_layer ? "layer" : "head", c.dms.eviction_disabled ? ", eviction disabled" : "");
    row("DMS decision heads", dms);
  }
  row("KV bytes / token", std::to_string(c.kv_bytes_per_token(4)) + " (f32), " + std::to_string(c.kv_bytes_per_token(2)) +
                              " (bf16), " + std::to_string(kv_bytes_per_token(c, cpu::kQ8)) + " (q8); " + human_bytes(static_cast<double>(c.kv_bytes_per_token(2) * c.max_position)) +
                              " bf16 at full context");
  return 0;
}

}  // namespace dms::cli
