// dms bench: decode step time, chunked prefill throughput and KV memory of each cache policy
// over contexts and batch sizes, measured side by side in one run; the largest batch each
// policy fits in a KV budget; the machine's memory bandwidth and the roofline of each decode
// step; the process's peak resident memory. JSON layout: docs/BENCH.md (schema "dms-bench/1").
// The measurements are the library's (src/dms/eval/bench_*); this file parses the options once
// into their settings, and prints and writes what they return.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common.h"
#include "commands.h"
#include "dms/cache/cache_sizing.h"
#include "dms/eval/bench_budget.h"
#include "dms/kernels/cpu/kv_quant.h"
#include "dms/eval/bench_decode.h"
#include "dms/eval/bench_prefill.h"
#include "dms/eval/bench_samples.h"
#include "machine_probe.h"

namespace dms::cli {
namespace {

using nlohmann::json;
using namespace dms::eval;

// Median and range of a sample, for tables and JSON alike.
struct Spread {
  double median = 0, min = 0, max = 0;
  explicit Spread(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    min = v.front();
    max = v.back();
  }
  json to_json() const { return {{"median", median}, {"min", min}, {"max", max}}; }
};

std::string spread_text(const Spread& sp, const char* format) {
  char lo[32], hi[32], buf[80];
  std::snprintf(lo, sizeof lo, format, sp.min);
  std::snprintf(hi, sizeof hi, format, sp.max);
  std::snprintf(buf, sizeof buf, "[%s, %s]", lo, hi);
  return buf;
}

}  // namespace

int run_bench(int argc, char** argv) {
  Args args("bench", "[options]",
            "Speed and memory of each cache policy over contexts and batch sizes, measured side by side in one\n"
            "run (the policies take turns, so machine noise falls on all alike):\n"
            "  decode   each sequence's context is stored as synthetic keys and values, as the policy would keep\n"
            "           them after a prefill, then whole-model decode steps are timed (every sequence one token);\n"
            "           next to each, the roofline: (weight bytes + live KV bytes) / measured read bandwidth\n"
            "  prefill  one sequence's prompt through the whole model in chunks, tokens/s\n"
            "  budget   with --kv-budget: the most sequences of each context a KV cache of that size admits\n"
            "  samples  with --samples: N samples of one prompt of each context through the engine, the prompt\n"
            "           prefilled once and its blocks shared (with --samples-separate, also each on its own):\n"
            "           time until every sample has its first token, decode tokens/s after that, peak KV held\n"
            "           (the decode and prefill caches hold their sequences dense, whatever --kv-budget says)\n"
            "Median and [min, max] over --repeats; peak resident memory of the process; --json writes it all\n"
            "(schema in docs/BENCH.md) and bench/plot_decode.py plots it.");
  add_model_options(args);
  add_cache_options(args, "KV cache size for the largest-batch search: the most sequences each policy fits in it (e.g. 2GiB)",
                    std::nullopt);
  args.option("contexts", "LIST", "context lengths", "1024,2048,4096,8192,16384")
      .option("batches", "LIST", "batch sizes", "1,4,16,32")
      .option("policies", "LIST",
              "policies to compare, each in --kv-dtype or its own after a colon (dense,dense:q8,dms,dms:q8); "
              "the first is the reference",
              "dense,dms")
      .option("steps", "N", "timed decode steps per repeat", "4")
      .option("repeats", "N", "repeats of the timed decode steps and of each prefill", "3")
      .option("max-dense-kv", "BYTES", "skip decode settings whose dense KV would exceed this", "11.5GiB")
      .option("prefill-chunk", "N", "tokens per prefill step (generate's --step-tokens)", "512")
      .option("prefill-max-context", "N", "time prefill only at contexts up to N; 0: no prefill", "4096")
      .option("max-batch", "N", "--kv-budget: stop searching at this many sequences", "4096")
      .option("bandwidth-mib", "N", "size of each array of the bandwidth probe", "256")
      .option("samples", "LIST", "numbers of samples of one prompt to time (off when absent)")
      .option("samples-tokens", "N", "tokens each sample generates", "32")
      .flag("samples-separate", "also time the samples each prefilling the prompt on its own")
      .option("json", "FILE", "write every measurement as JSON");
  if (!args.parse(argc, argv)) return 0;
  const auto contexts = args.integers("contexts", 1);
  const auto batches = args.integers("batches", 1);
  const auto policies = args.names("policies");
  if (policies.empty()) throw UsageError("--policies: empty list");
  const int64_t steps = args.at_least("steps", 1), repeats = args.at_least("repeats", 1);
  const int64_t max_dense = parse_bytes(args.str("max-dense-kv"), "max-dense-kv");
  const int64_t prefill_max = args.integer("prefill-max-context");
  if (prefill_max < 0) throw UsageError("--prefill-max-context: must be at least 0");
  const int64_t budget = kv_budget_from_args(args);
  const int64_t max_batch = args.at_least("max-batch", 1);
  const int64_t probe_mib = args.at_least("bandwidth-mib", 1);
  const std::vector<int64_t> sample_counts = args.has("samples") ? args.integers("samples", 1) : std::vector<int64_t>{};
  const int64_t sample_tokens = args.at_least("samples-tokens", 2);

  Model model = load_model_from_args(args);
  const ModelConfig& c = model.info.config;
  const at::ScalarType kv_dtype = kv_dtype_from_args(args);
  std::vector<std::string> policy_names;  // without their KV dtypes
  for (const auto& name : policies) policy_names.push_back(name.substr(0, name.find(':')));
  const BenchSetup s{model, policy_options_from_args(args, model, policy_names, "policies"), kv_dtype,
                     args.at_least("block-size", 1), args.at_least("prefill-chunk", 1)};
  int64_t kv_per_token = 0;  // the largest of the compared caches'
  for (const auto& name : policies) {
    try {
      kv_per_token = std::max(kv_per_token, kv_bytes_per_token(c, s.spec(name).kv_dtype));
    } catch (const Error& e) {
      throw UsageError(std::string("--policies: ") + e.what());
    }
  }
  if (budget > 0) {  // a budget too small for any block is an error before any measurement
    try {
      s.cache_of_bytes(policies.front(), budget);
    } catch (const Error& e) {
      throw UsageError(std::string("--kv-budget: ") + e.what());
    }
  }
  const int64_t weight_bytes = decode_weight_bytes(model.transformer->weights());
  const Bandwidth bw = measure_bandwidth(probe_mib << 20);
  auto roofline_ms = [&](const std::string& name, int64_t live_slots) {
    return 1e3 * static_cast<double>(weight_bytes + s.live_kv_bytes(name, live_slots)) / bw.read_bytes_per_s;
  };
  std::printf("model %s (%s), %d threads, KV %s, policies: %s\n", model.info.path.c_str(), arch_name(c.arch).c_str(),
              at::get_num_threads(), args.str("kv-dtype").c_str(), args.str("policies").c_str());
  std::printf("memory bandwidth: read %.2f GB/s, triad %.2f GB/s (arrays of %s); weights read per decode step %s\n",
              bw.read_bytes_per_s / 1e9, bw.triad_bytes_per_s / 1e9, human_bytes(static_cast<double>(bw.array_bytes)).c_str(),
              human_bytes(static_cast<double>(weight_bytes)).c_str());

  std::printf("\ndecode: median step time [min, max] over %lld steps; roofline = (weights + live KV) / read bandwidth\n",
              static_cast<long long>(steps * repeats));
  std::printf("%8s %6s %-10s %10s %20s %10s %8s %12s %7s %9s %9s %11s\n", "context", "batch", "policy", "step ms",
              "[min, max]", "roof ms", "of roof", "KV held", "CR", "KV ratio", "speedup", "tok/s");
  json decode_json = json::array();
  for (int64_t batch : batches)
    for (int64_t context : contexts) {
      const int64_t dense = batch * context * kv_per_token;
      if (dense > max_dense) {
        std::printf("%8lld %6lld   skipped: dense KV %s > --max-dense-kv\n", static_cast<long long>(context),
                    static_cast<long long>(batch), human_bytes(static_cast<double>(dense)).c_str());
        continue;
      }
      const std::vector<DecodeResult> row = measure_decode(s, policies, context, batch, steps, repeats);
      const int64_t peak_rss = peak_resident_bytes();  // with this setting's caches
      const double ref_ms = Spread(row.front().step_ms).median;
      for (const DecodeResult& m : row) {
        const Spread sp(m.step_ms);
        const double roof = roofline_ms(m.policy, m.live_slots);
        std::printf("%8lld %6lld %-10s %10.1f %20s %10.2f %7.0f%% %12s %7.2f %8.2fx %8.2fx %11.1f\n",
                    static_cast<long long>(context), static_cast<long long>(batch), m.policy.c_str(), sp.median,
                    spread_text(sp, "%.1f").c_str(), roof, 100 * roof / sp.median,
                    human_bytes(static_cast<double>(m.kv_bytes)).c_str(), m.compression_ratio,
                    static_cast<double>(row.front().kv_bytes) / static_cast<double>(m.kv_bytes), ref_ms / sp.median,
                    1e3 * static_cast<double>(batch) / sp.median);
        std::fflush(stdout);
        decode_json.push_back({{"policy", m.policy},
                               {"context", m.context},
                               {"batch", m.batch},
                               {"step_ms", m.step_ms},
                               {"step_ms_stats", sp.to_json()},
                               {"tokens_per_s", 1e3 * static_cast<double>(batch) / sp.median},
                               {"kv_bytes", m.kv_bytes},
                               {"dense_kv_bytes", m.dense_bytes},
                               {"kv_dtype", cpu::kv_dtype_name(s.spec(m.policy).kv_dtype)},
                               {"live_kv_bytes", s.live_kv_bytes(m.policy, m.live_slots)},
                               {"compression_ratio", m.compression_ratio},
                               {"roofline_ms", roof},
                               {"roofline_fraction", roof / sp.median},
                               {"peak_rss_bytes", peak_rss}});
      }
    }

  json prefill_json = json::array();
  std::vector<int64_t> prefill_contexts;
  for (int64_t context : contexts)
    if (context <= prefill_max) prefill_contexts.push_back(context);
  if (!prefill_contexts.empty()) {
    std::printf("\nprefill: one sequence in chunks of %lld tokens, median tokens/s [min, max] over %lld repeats\n",
                static_cast<long long>(s.chunk), static_cast<long long>(repeats));
    std::printf("%8s %-10s %10s %22s\n", "context", "policy", "tok/s", "[min, max]");
    for (int64_t context : prefill_contexts)
      for (const PrefillResult& p : measure_prefill(s, policies, context, repeats)) {
        const Spread sp(p.tokens_per_s);
        std::printf("%8lld %-10s %10.1f %22s\n", static_cast<long long>(context), p.policy.c_str(), sp.median,
                    spread_text(sp, "%.1f").c_str());
        std::fflush(stdout);
        prefill_json.push_back({{"policy", p.policy},
                                {"context", p.context},
                                {"chunk", s.chunk},
                                {"tokens_per_s", p.tokens_per_s},
                                {"tokens_per_s_stats", sp.to_json()}});
      }
  }

  json budget_json = nullptr;
  if (budget > 0) {
    std::printf("\nlargest batch in a KV budget of %s (sequences admitted, each with its next decode token; "
                "'divided': the budget over one sequence's bytes)\n",
                human_bytes(static_cast<double>(budget)).c_str());
    std::printf("%8s %-10s %10s %10s %12s\n", "context", "policy", "max batch", "divided", "KV held");
    budget_json = {{"bytes", budget}, {"results", json::array()}};
    for (int64_t context : contexts)
      for (const auto& policy : policies) {
        const BudgetResult b = largest_batch(s, policy, context, budget, max_batch);
        std::printf("%8lld %-10s %10lld %10lld %12s\n", static_cast<long long>(context), policy.c_str(),
                    static_cast<long long>(b.max_batch), static_cast<long long>(b.divided),
                    human_bytes(static_cast<double>(b.bytes_held)).c_str());
        std::fflush(stdout);
        budget_json["results"].push_back({{"policy", b.policy},
                                          {"context", b.context},
                                          {"max_batch", b.max_batch},
                                          {"divided", b.divided},
                                          {"bytes_held", b.bytes_held},
                                          {"pool_bytes", b.pool_bytes},
                                          {"limit_reached", b.max_batch >= max_batch}});
      }
  }
  json samples_json = json::array();
  if (!sample_counts.empty()) {
    std::printf("\nsamples: N samples of one prompt, %lld tokens each; median [min, max] over %lld repeats of the time "
                "until every sample has its first token and of the decode tokens/s after that\n",
                static_cast<long long>(sample_tokens), static_cast<long long>(repeats));
    std::printf("%8s %7s %-10s %-9s %10s %20s %11s %22s %12s %12s\n", "context", "samples", "policy", "prompt",
                "first s", "[min, max]", "decode t/s", "[min, max]", "KV held", "dense");
    for (int64_t context : contexts)
      for (int64_t n : sample_counts)
        for (bool shared : {true, false}) {
          if (!shared && !args.has("samples-separate")) continue;
          for (const SamplesResult& m :
               measure_samples(s, policies, context, n, sample_tokens, shared, repeats)) {
            const Spread first(m.first_token_s), decode(m.decode_tokens_per_s);
            std::printf("%8lld %7lld %-10s %-9s %10.3f %20s %11.1f %22s %12s %12s\n", static_cast<long long>(context),
                        static_cast<long long>(n), m.policy.c_str(), shared ? "shared" : "separate", first.median,
                        spread_text(first, "%.3f").c_str(), decode.median, spread_text(decode, "%.1f").c_str(),
                        human_bytes(static_cast<double>(m.peak_bytes_held)).c_str(),
                        human_bytes(static_cast<double>(m.peak_dense_bytes)).c_str());
            std::fflush(stdout);
            samples_json.push_back({{"policy", m.policy},
                                    {"context", m.context},
                                    {"samples", m.samples},
                                    {"tokens", m.tokens},
                                    {"shared", m.shared},
                                    {"first_token_s", m.first_token_s},
                                    {"first_token_s_stats", first.to_json()},
                                    {"decode_tokens_per_s", m.decode_tokens_per_s},
                                    {"decode_tokens_per_s_stats", decode.to_json()},
                                    {"peak_bytes_held", m.peak_bytes_held},
                                    {"peak_dense_bytes", m.peak_dense_bytes}});
          }
        }
  }
  const int64_t peak = peak_resident_bytes();
  std::printf("\npeak resident memory of the process: %s\n", human_bytes(static_cast<double>(peak)).c_str());

  if (args.has("json")) {
    const std::string path = args.str("json");
    std::ofstream f(path);
    const json doc = {{"schema", "dms-bench/1"},
                      {"model", model.info.path},
                      {"threads", at::get_num_threads()},
                      {"kv_dtype", args.str("kv-dtype")},
                      {"kv_bytes_per_token", kv_per_token},
                      {"block_size", s.block_size},
                      {"dms_window", c.dms.window},
                      {"force_evict", args.has("force-evict") ? json(args.number("force-evict")) : json(nullptr)},
                      {"policies", policies},
                      {"machine",
                       {{"read_bandwidth_bytes_per_s", bw.read_bytes_per_s},
                        {"triad_bandwidth_bytes_per_s", bw.triad_bytes_per_s},
                        {"probe_array_bytes", bw.array_bytes}}},
                      {"weight_bytes_per_step", weight_bytes},
                      {"decode", decode_json},
                      {"prefill", prefill_json},
                      {"kv_budget", budget_json},
                      {"samples", samples_json},
                      {"peak_rss_bytes", peak}};
    f << doc.dump(1) << "\n";
    if (!f) throw Error(path + ": cannot write");
  }
  return 0;
}

}  // namespace dms::cli
