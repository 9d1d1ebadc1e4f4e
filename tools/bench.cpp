// dms bench: decode step time and KV memory of each cache policy over contexts and batch
// sizes, measured side by side in one run.
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common.h"
#include "commands.h"

namespace dms::cli {
namespace {

std::vector<int64_t> parse_list(const std::string& text, const std::string& option) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 1) throw UsageError("--" + option + ": expected positive integers separated by commas, got '" + text + "'");
    out.push_back(v);
  }
  if (out.empty()) throw UsageError("--" + option + ": empty list");
  return out;
}

std::vector<std::string> split_names(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Measurement {
  std::string policy;
  int64_t context = 0, batch = 0;
  std::vector<double> step_ms;   // every timed decode step
  int64_t kv_bytes = 0;          // held after the context was stored
  int64_t dense_bytes = 0;
  double compression_ratio = 1;
};

// One policy's cache holding `batch` sequences of `context` tokens of synthetic keys and
// values (the same random rows for every layer and sequence: content does not change the
// cost), as the cache would hold them after a prefill under its policy.
struct Contender {
  std::unique_ptr<PagedKVCache> cache;
  std::vector<StepSequence> step;
  Measurement m;
};

Contender fill(const Model& model, const Args& args, const std::string& policy, int64_t context, int64_t batch,
               int64_t decode_steps) {
  const ModelConfig& c = model.info.config;
  Args cache_args = args;
  cache_args.set("policy", policy);
  if (policy != "dms") cache_args.unset("force-evict");
  Contender x;
  x.cache = make_cache_from_args(cache_args, model, batch, context + decode_steps + 1);
  const int64_t chunk = std::min<int64_t>(context, 1024);
  const auto dtype = x.cache->options().kv_dtype;
  const at::Tensor k = at::randn({chunk, c.n_kv_heads, c.head_dim}).to(dtype);
  const at::Tensor v = at::randn({chunk, c.n_kv_heads, c.head_dim}).to(dtype);
  for (int64_t b = 0; b < batch; ++b) {
    const SequenceId id = x.cache->add_sequence();
    x.step.push_back({id, 1});
    for (int64_t done = 0; done < context; done += chunk) {
      const int64_t n = std::min(chunk, context - done);
      x.cache->begin_step({{id, n}});
      for (int64_t l = 0; l < c.n_layers; ++l) x.cache->store(l, k.narrow(0, 0, n), v.narrow(0, 0, n), at::Tensor());
      x.cache->end_step();
    }
  }
  const CacheStats filled = x.cache->stats();
  x.m = Measurement{policy, context, batch, {}, filled.bytes_held, filled.dense_bytes, filled.compression_ratio};
  return x;
}

// Whole-model decode steps, every sequence one token. The policies take turns, `steps` at a
// time, so that whatever else the machine does falls on all of them alike.
std::vector<Measurement> measure(const Model& model, const Args& args, const std::vector<std::string>& policies,
                                 int64_t context, int64_t batch, int64_t steps, int64_t repeats) {
  std::vector<Contender> contenders;
  for (const auto& policy : policies) contenders.push_back(fill(model, args, policy, context, batch, steps * repeats + 1));
  const at::Tensor tokens = at::randint(model.info.config.vocab_size, {batch}, at::kLong);
  auto decode = [&](Contender& x) {
    x.cache->begin_step(x.step);
    model.transformer->logits(model.transformer->forward(tokens, x.cache->step_positions(), *x.cache));
    x.cache->end_step();
  };
  for (auto& x : contenders) decode(x);  // warm-up: first touch of new pages, thread pool start
  for (int64_t r = 0; r < repeats; ++r)
    for (auto& x : contenders)
      for (int64_t s = 0; s < steps; ++s) {
        const auto t0 = std::chrono::steady_clock::now();
        decode(x);
        x.m.step_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
  std::vector<Measurement> out;
  for (auto& x : contenders) out.push_back(std::move(x.m));
  return out;
}

}  // namespace

int run_bench(int argc, char** argv) {
  Args args("bench", "[options]",
            "Decode step time and KV cache memory for each policy over contexts and batch sizes, measured\n"
            "side by side in one run. Each sequence's context is stored as synthetic keys and values, as the\n"
            "policy would keep them after a prefill, then whole-model decode steps are timed (all sequences\n"
            "one token each), the policies taking turns. Prints median and spread per setting and the ratios\n"
            "against the first policy.");
  add_model_options(args);
  add_cache_options(args);
  args.option("contexts", "LIST", "context lengths", "1024,2048,4096,8192,16384")
      .option("batches", "LIST", "batch sizes", "1,4,16,32")
      .option("policies", "LIST", "policies to compare; the first is the reference", "dense,dms")
      .option("steps", "N", "timed decode steps per repeat", "4")
      .option("repeats", "N", "repeats of the timed steps", "3")
      .option("max-dense-kv", "BYTES", "skip settings whose dense KV would exceed this", "11.5GiB")
      .option("json", "FILE", "write the measurements as JSON");
  if (!args.parse(argc, argv)) return 0;
  const auto contexts = parse_list(args.str("contexts"), "contexts");
  const auto batches = parse_list(args.str("batches"), "batches");
  const auto policies = split_names(args.str("policies"));
  if (policies.empty()) throw UsageError("--policies: empty list");
  const int64_t steps = args.integer("steps"), repeats = args.integer("repeats");
  if (steps < 1 || repeats < 1) throw UsageError("--steps and --repeats must be at least 1");
  const int64_t max_dense = parse_bytes(args.str("max-dense-kv"), "max-dense-kv");

  Model model = load_model_from_args(args);
  const ModelConfig& c = model.info.config;
  const int64_t kv_elem = static_cast<int64_t>(at::elementSize(kv_dtype_from_args(args)));
  std::printf("model %s (%s), %d threads, KV %s, policies: %s\n", model.info.path.c_str(), arch_name(c.arch).c_str(),
              at::get_num_threads(), args.str("kv-dtype").c_str(), args.str("policies").c_str());
  std::printf("%8s %6s %-10s %12s %20s %12s %8s %10s %10s\n", "context", "batch", "policy", "step ms", "[min, max]",
              "KV held", "CR", "KV ratio", "speedup");
  nlohmann::json out = nlohmann::json::array();
  for (int64_t batch : batches)
    for (int64_t context : contexts) {
      const int64_t dense = batch * context * c.kv_bytes_per_token(kv_elem);
      if (dense > max_dense) {
        std::printf("%8lld %6lld   skipped: dense KV %s > --max-dense-kv\n", static_cast<long long>(context),
                    static_cast<long long>(batch), human_bytes(static_cast<double>(dense)).c_str());
        continue;
      }
      const std::vector<Measurement> row = measure(model, args, policies, context, batch, steps, repeats);
      const Measurement& ref = row.front();
      for (const Measurement& m : row) {
        const double med = median(m.step_ms);
        const auto [lo, hi] = std::minmax_element(m.step_ms.begin(), m.step_ms.end());
        char spread[48];
        std::snprintf(spread, sizeof spread, "[%.1f, %.1f]", *lo, *hi);
        std::printf("%8lld %6lld %-10s %12.1f %20s %12s %8.2f %9.2fx %9.2fx\n", static_cast<long long>(context),
                    static_cast<long long>(batch), m.policy.c_str(), med, spread,
                    human_bytes(static_cast<double>(m.kv_bytes)).c_str(), m.compression_ratio,
                    static_cast<double>(ref.kv_bytes) / static_cast<double>(m.kv_bytes), median(ref.step_ms) / med);
        std::fflush(stdout);
        out.push_back({{"policy", m.policy},
                       {"context", m.context},
                       {"batch", m.batch},
                       {"step_ms", m.step_ms},
                       {"step_ms_median", med},
                       {"kv_bytes", m.kv_bytes},
                       {"dense_kv_bytes", m.dense_bytes},
                       {"compression_ratio", m.compression_ratio}});
      }
    }
  if (args.has("json")) {
    std::ofstream f(args.str("json"));
    nlohmann::json doc = {{"model", model.info.path},
                          {"threads", at::get_num_threads()},
                          {"kv_dtype", args.str("kv-dtype")},
                          {"dms_window", c.dms.window},
                          {"force_evict", args.has("force-evict") ? args.number("force-evict") : -1.0},
                          {"measurements", out}};
    f << doc.dump(1) << "\n";
    if (!f) throw Error(args.str("json") + ": cannot write");
  }
  return 0;
}

}  // namespace dms::cli
