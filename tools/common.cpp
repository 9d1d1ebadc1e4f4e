#include "common.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <thread>

#include "dms/cache/cache_sizing.h"
#include "dms/kernels/cpu/kv_quant.h"

namespace dms::cli {

namespace fs = std::filesystem;

// Trained with `dms retrofit` on the default model; models/README.md says how.
constexpr const char* kShippedAdapter = "models/SmolLM2-135M-Instruct.dms.safetensors";

void add_model_options(Args& args, ShippedAdapter shipped) {
  args.option("model", "PATH", "Hugging Face checkpoint directory or GGUF file", "the default model, SmolLM2-135M-Instruct")
      .option("dtype", "f32|bf16", "compute dtype", "f32")
      .option("threads", "N", "CPU threads", "all cores")
      .option("dms-adapter", "PATH", "apply a DMS decision-head adapter (safetensors) to the model")
      .option("dms-window", "W", "DMS: a flagged key stays visible to W more queries", "the checkpoint's")
      .option("dms-scale", "S", "DMS: decision logit scale", "the checkpoint's")
      .option("dms-offset", "O", "DMS: decision logit offset", "the checkpoint's")
      .option("dms-alpha-per", "head|layer", "DMS: one decision per KV head or per layer", "the checkpoint's")
      .flag("no-eviction", "DMS: run the decision heads but keep every key");
  if (shipped == ShippedAdapter::Apply)
    args.flag("no-dms-adapter", std::string("run the default model without its shipped DMS adapter (") + kShippedAdapter + ")");
}

std::string shipped_file(const std::string& relative) {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return (exe.parent_path().parent_path() / relative).string();
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

void add_cache_options(Args& args, const std::string& kv_budget_help, std::optional<std::string> kv_budget_fallback) {
  args.option("policy", "NAME", "KV eviction: " + joined(policy_names()), "dms for DMS models, else dense")
      .option("kv-dtype", "f32|bf16|f16|q8", "KV cache storage (q8: int8 with a scale per 32 values)", "bf16")
      .option("kv-budget", "BYTES", kv_budget_help, std::move(kv_budget_fallback))
      .option("block-size", "N", "key slots per cache block", std::to_string(kDefaultBlockSize))
      .option("target-cr", "R", "streaming/h2o/tova: keep 1/R of the tokens seen (at least 64)")
      .option("budget", "N", "streaming/h2o/tova: keep N tokens per head")
      .option("sinks", "N", "streaming: first tokens kept forever", "4")
      .option("force-evict", "F", "dms: flag each key with probability F instead of the model's decisions");
}

namespace {

// The compute dtype (--dtype); the KV cache's has its own parser, parse_kv_dtype.
at::ScalarType parse_dtype(const std::string& text, const std::string& option) {
  if (text == "f32") return at::kFloat;
  if (text == "bf16") return at::kBFloat16;
  throw UsageError("--" + option + ": expected f32, bf16, got '" + text + "'");
}

}  // namespace

void set_threads_from_args(const Args& args) {
  if (args.has("threads")) {
    at::set_num_threads(static_cast<int>(args.at_least("threads", 1)));
  } else {
    at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  }
}

at::ScalarType dtype_from_args(const Args& args) { return parse_dtype(args.str("dtype"), "dtype"); }

Model load_model_from_args(const Args& args, ShippedAdapter shipped) {
  set_threads_from_args(args);
  const at::ScalarType dtype = dtype_from_args(args);
  DmsLoadOptions dms;
  if (args.has("dms-adapter")) dms.adapter_path = args.str("dms-adapter");
  if (args.has("dms-window")) dms.overrides.window = args.integer("dms-window");
  if (args.has("dms-scale")) dms.overrides.alpha_scale = args.number("dms-scale");
  if (args.has("dms-offset")) dms.overrides.alpha_offset = args.number("dms-offset");
  if (args.has("dms-alpha-per")) {
    const std::string per = args.str("dms-alpha-per");
    if (per != "head" && per != "layer") throw UsageError("--dms-alpha-per: expected head or layer, got '" + per + "'");
    dms.overrides.per_layer = per == "layer";
  }
  if (args.has("no-eviction")) dms.overrides.eviction_disabled = true;
  const char* model_env = std::getenv("DMS_MODEL");
  const bool default_model = !args.has("model") && !(model_env && *model_env);
  if (shipped == ShippedAdapter::Apply && default_model && !args.has("dms-adapter") && !args.has("no-dms-adapter")) {
    const std::string adapter = shipped_file(kShippedAdapter);
    if (fs::is_regular_file(adapter)) dms.adapter_path = adapter;
    else std::fprintf(stderr, "warning: the DMS adapter of the default model is not at %s; running it dense\n", adapter.c_str());
  }
  const std::string path = args.has("model") ? args.str("model") : default_model_path();
  Model model = load_model(path, dtype, dms);
  std::fprintf(stderr, "model: %s | weights: %s in memory | compute %s\n", path.c_str(),
               human_bytes(static_cast<double>(model.info.weight_bytes)).c_str(), dtype == at::kBFloat16 ? "bf16" : "f32");
  return model;
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
  as_usage([&] { p.sampling.validate(); });
  p.stop_strings = args.all("stop");
  if (!args.has("ignore-eos")) p.stop_ids = model.info.config.eos_ids;
  return p;
}

std::string policy_from_args(const Args& args, const Model& model) {
  if (args.has("policy")) return args.str("policy");
  return model.info.config.dms.decides() ? "dms" : "dense";
}

PolicyOptions policy_options_from_args(const Args& args, const Model& model, const std::vector<std::string>& policies,
                                       const std::string& policies_option) {
  const ModelConfig& c = model.info.config;
  for (const auto& name : policies)  // before the checks below judge the other options by it
    if (std::find(policy_names().begin(), policy_names().end(), name) == policy_names().end())
      throw UsageError("--" + policies_option + ": unknown eviction policy '" + name + "' (" + joined(policy_names()) + ")");
  const bool dms = std::find(policies.begin(), policies.end(), "dms") != policies.end();
  const bool budgeted = std::any_of(policies.begin(), policies.end(), is_budget_policy);
  PolicyOptions po;
  po.dms.window = c.dms.window;
  if (args.has("force-evict")) {
    if (!dms) throw UsageError("--force-evict: only meaningful with --policy dms");
    po.dms.forced_fraction = args.number("force-evict");
    if (!(po.dms.forced_fraction >= 0 && po.dms.forced_fraction <= 1)) throw UsageError("--force-evict: must be in [0, 1]");
  } else if (dms && !c.dms.decides()) {
    throw UsageError("--policy dms: " + model.info.path +
                     " has no DMS decision heads (pass --dms-adapter, or --force-evict F to flag keys at random)");
  }
  if ((args.has("target-cr") || args.has("budget")) && !budgeted)
    throw UsageError("--target-cr/--budget: only meaningful with a budget policy (" + joined(budget_policy_names()) + ")");
  for (const auto& name : policies)
    if (is_budget_policy(name) && args.has("target-cr") == args.has("budget"))
      throw UsageError("--policy " + name + ": give exactly one of --target-cr R or --budget N");
  if (args.has("target-cr")) po.budget.compression_ratio = args.number("target-cr");
  if (args.has("budget")) po.budget.tokens = args.integer("budget");
  po.sinks = args.integer("sinks");
  for (const auto& name : policies) {
    try {
      make_policy(name, po);
    } catch (const Error& e) {
      throw UsageError("--" + policies_option + ": " + e.what());
    }
  }
  return po;
}

int64_t kv_budget_from_args(const Args& args) {
  if (!args.has("kv-budget")) return 0;
  const int64_t bytes = parse_bytes(args.str("kv-budget"), "kv-budget");
  if (bytes < 1) throw UsageError("--kv-budget: must be at least 1 byte, got '" + args.str("kv-budget") + "'");
  return bytes;
}

std::unique_ptr<PagedKVCache> make_cache_from_args(const Args& args, const Model& model, int64_t sequences,
                                                   int64_t tokens) {
  const ModelConfig& c = model.info.config;
  const std::string name = policy_from_args(args, model);
  const PolicyOptions po = policy_options_from_args(args, model, {name}, "policy");
  const at::ScalarType kv_dtype = kv_dtype_from_args(args);
  const int64_t block_size = args.at_least("block-size", 1);
  PagedCacheOptions co = dense_cache_options(c, kv_dtype, block_size, sequences, tokens);
  if (const int64_t bytes = kv_budget_from_args(args)) {
    co.blocks_per_layer = PagedKVCache::blocks_per_layer_for(c, kv_dtype, block_size, bytes);
    if (co.blocks_per_layer < 1) throw UsageError("--kv-budget: " + human_bytes(static_cast<double>(bytes)) + " holds no block");
  }
  return std::make_unique<PagedKVCache>(c, co, make_policy(name, po));
}

at::ScalarType kv_dtype_from_args(const Args& args) { return parse_kv_dtype(args.str("kv-dtype"), "kv-dtype"); }

at::ScalarType parse_kv_dtype(const std::string& text, const std::string& option) {
  if (const auto dtype = cpu::kv_dtype_from_name(text)) return *dtype;
  throw UsageError("--" + option + ": expected f32, bf16, f16 or q8, got '" + text + "'");
}

std::string describe_policy(const Args& args, const Model& model) {
  const std::string name = policy_from_args(args, model);
  std::string out = name;
  if (name == "dms") {
    out += ", window " + std::to_string(model.info.config.dms.window);
    if (args.has("force-evict")) out += ", forced eviction " + args.str("force-evict");
  }
  if (args.has("target-cr")) out += ", target " + args.str("target-cr") + "x";
  if (args.has("budget")) out += ", budget " + args.str("budget") + " tokens";
  return out + ", KV " + args.str("kv-dtype");
}

std::string rate(int64_t tokens, double seconds) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%lld tokens in %.2f s (%.1f tok/s)", static_cast<long long>(tokens), seconds,
                seconds > 0 ? tokens / seconds : 0.0);
  return buf;
}

std::string duration_text(double seconds) {
  const auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, s / 60 % 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%llds", s);
  return buf;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", b, units[u]);
  return buf;
}

int64_t parse_bytes(const std::string& text, const std::string& option) {
  static const std::pair<const char*, double> units[] = {{"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0},
                                                         {"KB", 1e3},     {"MB", 1e6},         {"GB", 1e9}, {"B", 1}};
  double scale = 1;
  std::string number = text;
  for (auto [suffix, s] : units) {
    const std::string suf = suffix;
    if (number.size() > suf.size() && number.ends_with(suf)) {
      number.resize(number.size() - suf.size());
      scale = s;
      break;
    }
  }
  char* end = nullptr;
  const double v = std::strtod(number.c_str(), &end);
  if (number.empty() || *end != '\0' || !(v > 0) || !std::isfinite(v))
    throw UsageError("--" + option + ": expected a size such as 512MiB or 2GiB, got '" + text + "'");
  return static_cast<int64_t>(v * scale);
}

}  // namespace dms::cli
