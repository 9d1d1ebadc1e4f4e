// Options shared by the subcommands that run a model, and the code that applies them.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "args.h"
#include "dms/cache/paged_kv_cache.h"
#include "dms/engine/engine.h"
#include "dms/model/loader.h"

namespace dms::cli {

// Whether a command runs the default model with the DMS adapter shipped for it (generate, chat,
// eval) or as it is (the teacher of gen-data, the bench's forced eviction).
enum class ShippedAdapter { Apply, Ignore };

// --model, --dtype, --threads, --dms-adapter, --dms-window, --dms-scale, --dms-offset, --dms-alpha-per,
// --no-eviction, and with ShippedAdapter::Apply --no-dms-adapter
void add_model_options(Args& args, ShippedAdapter shipped = ShippedAdapter::Ignore);
// --max-tokens, --temperature, --top-k, --top-p, --min-p, --seed, --stop, --ignore-eos
void add_generation_options(Args& args);
// --policy, --kv-dtype, --kv-budget, --block-size, --target-cr, --budget, --sinks, --force-evict.
// --kv-budget BYTES is the size of the KV cache; `kv_budget_help` says what it sizes where a
// command reads it differently (bench: the cache its largest-batch search fills).
void add_cache_options(Args& args,
                       const std::string& kv_budget_help = "KV cache size (the memory every sequence's keys share), e.g. 2GiB",
                       std::optional<std::string> kv_budget_fallback = "enough for every sequence kept dense");

// --threads (default: every core) as libtorch's thread count.
void set_threads_from_args(const Args& args);
// --dtype, the compute dtype of the weights: f32 or bf16.
at::ScalarType dtype_from_args(const Args& args);
// Sets the thread count and loads the model named by --model (or the default one), with its
// DMS adapter and overrides. With ShippedAdapter::Apply, the default model (no --model, no
// DMS_MODEL) gets the adapter shipped in models/ unless --dms-adapter or --no-dms-adapter says
// otherwise.
Model load_model_from_args(const Args& args, ShippedAdapter shipped = ShippedAdapter::Ignore);
// A file shipped with dms: <source tree>/<relative>, found from the binary at <tree>/<build dir>/dms.
std::string shipped_file(const std::string& relative);
// Generation settings from the options; the model's EOS ids stop generation unless --ignore-eos.
GenerationParams generation_params_from_args(const Args& args, const Model& model);
// --policy, or the model's default: dms for a model with decision heads, else dense.
std::string policy_from_args(const Args& args, const Model& model);
// The eviction settings of the cache options, for every policy in `policies` (generate's one,
// bench's list; make_policy reads each policy's own fields). Usage errors for a setting none of
// them reads, a budget policy without exactly one of --target-cr and --budget, dms on a model
// without decision heads and no --force-evict, and what make_policy refuses (prefixed with
// --`policies_option`).
PolicyOptions policy_options_from_args(const Args& args, const Model& model, const std::vector<std::string>& policies,
                                       const std::string& policies_option);
// --kv-budget in bytes (at least 1); 0 when absent.
int64_t kv_budget_from_args(const Args& args);
// A paged cache with the policy the options name, its pools sized by --kv-budget or, by default,
// for `sequences` dense sequences of `tokens` tokens each (dense_cache_bytes).
std::unique_ptr<PagedKVCache> make_cache_from_args(const Args& args, const Model& model, int64_t sequences,
                                                   int64_t tokens);
// --kv-dtype as a scalar type.
at::ScalarType kv_dtype_from_args(const Args& args);
// f32, bf16, f16 or q8 (cpu::kQ8); UsageError naming --option otherwise.
at::ScalarType parse_kv_dtype(const std::string& text, const std::string& option);
// "dms, window 512" / "h2o, budget 8x" ...: what the cache does, for reports.
std::string describe_policy(const Args& args, const Model& model);

// "12 tokens in 0.05 s (240.0 tok/s)"
std::string rate(int64_t tokens, double seconds);
// "45s", "3m07s", "2h05m" (rounded to the second)
std::string duration_text(double seconds);
// "12.3 MiB"
std::string human_bytes(double bytes);
// Parses "2GiB", "512MiB", "1e9": throws UsageError naming `option`.
int64_t parse_bytes(const std::string& text, const std::string& option);

}  // namespace dms::cli
