// dms bench: decode step time, chunked prefill throughput and KV memory of each cache policy
// over contexts and batch sizes, measured side by side in one run; the largest batch each
// policy fits in a KV budget; the machine's memory bandwidth and the roofline of each decode
// step; the process's peak resident memory. JSON layout: docs/BENCH.md (schema "dms-bench/1").
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common.h"
#include "commands.h"
#include "machine_probe.h"

namespace dms::cli {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

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

int64_t positive(const Args& args, const std::string& option) {
  const int64_t v = args.integer(option);
  if (v < 1) throw UsageError("--" + option + ": must be at least 1");
  return v;
}

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

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

// What every setting needs to know of the model and the run.
struct Setup {
  const Model& model;
  const Args& args;
  int64_t kv_elem = 0;          // bytes per K or V element
  int64_t weight_bytes = 0;     // read by one decode step
  double bandwidth = 0;         // bytes/s the roofline divides by
  int64_t chunk = 0;            // prefill chunk, tokens
  int64_t live_kv_bytes(int64_t live_slots) const { return live_slots * 2 * model.info.config.head_dim * kv_elem; }
  double roofline_ms(int64_t live_slots) const {
    return 1e3 * static_cast<double>(weight_bytes + live_kv_bytes(live_slots)) / bandwidth;
  }
};

// Bytes of the weights a decode step reads: every layer's tensors, the final norm and the
// output projection (the embedding gives only one row per token, so it counts only when tied
// to the output projection, which reads all of it).
int64_t decode_weight_bytes(const Weights& w) {
  auto bytes = [](const at::Tensor& t) { return t.defined() ? static_cast<int64_t>(t.nbytes()) : int64_t{0}; };
  int64_t total = bytes(w.final_norm) + bytes(w.lm_head);
  for (const LayerWeights& l : w.layers)
    for (const at::Tensor* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq, &l.bk, &l.bv, &l.bo, &l.q_norm, &l.k_norm,
                                &l.mlp_norm, &l.w_gate, &l.w_up, &l.w_down, &l.b_gate, &l.b_up, &l.b_down, &l.decision.norm,
                                &l.decision.proj, &l.decision.bias})
      total += bytes(*t);
  return total;
}

// A cache for `policy` as the options describe it; `kv_memory` (bytes), when given, sizes it.
std::unique_ptr<PagedKVCache> policy_cache(const Setup& s, const std::string& policy, int64_t sequences, int64_t tokens,
                                           int64_t kv_memory = 0) {
  Args a = s.args;
  a.set("policy", policy);
  if (policy != "dms") a.unset("force-evict");
  if (policy != "streaming" && policy != "h2o" && policy != "tova") {
    a.unset("target-cr");
    a.unset("budget");
  }
  if (kv_memory > 0) a.set("kv-memory", std::to_string(kv_memory));
  return make_cache_from_args(a, s.model, sequences, tokens);
}

// Stores `context` tokens of synthetic keys and values for a new sequence, chunk by chunk as a
// prefill would (the same random rows for every layer and chunk: content does not change the
// cost). Throws CacheFull, with the sequence removed again, when a chunk does not fit.
SequenceId store_context(PagedKVCache& cache, const at::Tensor& k, const at::Tensor& v, int64_t context, int64_t chunk) {
  const SequenceId id = cache.add_sequence();
  try {
    for (int64_t done = 0; done < context; done += chunk) {
      const int64_t n = std::min(chunk, context - done);
      cache.begin_step({{id, n}});
      for (int64_t l = 0; l < cache.n_layers(); ++l) cache.store(l, k.narrow(0, 0, n), v.narrow(0, 0, n), at::Tensor());
      cache.end_step();
    }
  } catch (const CacheFull&) {
    cache.remove_sequence(id);
    throw;
  }
  return id;
}

std::pair<at::Tensor, at::Tensor> synthetic_kv(const Setup& s, int64_t rows, at::ScalarType dtype) {
  const ModelConfig& c = s.model.info.config;
  return {at::randn({rows, c.n_kv_heads, c.head_dim}).to(dtype), at::randn({rows, c.n_kv_heads, c.head_dim}).to(dtype)};
}

struct DecodeResult {
  std::string policy;
  int64_t context = 0, batch = 0;
  std::vector<double> step_ms;  // every timed decode step
  int64_t kv_bytes = 0, dense_bytes = 0, live_slots = 0;
  double compression_ratio = 1;
  int64_t peak_rss = 0;  // of the process after this setting
};

// One policy's cache holding `batch` sequences of `context` tokens, as the cache would hold
// them after a prefill under its policy.
struct Contender {
  std::unique_ptr<PagedKVCache> cache;
  std::vector<StepSequence> step;
  DecodeResult r;
};

Contender fill(const Setup& s, const std::string& policy, int64_t context, int64_t batch, int64_t decode_steps) {
  Contender x;
  x.cache = policy_cache(s, policy, batch, context + decode_steps + 1);
  const auto [k, v] = synthetic_kv(s, std::min(context, s.chunk), x.cache->options().kv_dtype);
  for (int64_t b = 0; b < batch; ++b) x.step.push_back({store_context(*x.cache, k, v, context, s.chunk), 1});
  const CacheStats filled = x.cache->stats();
  x.r.policy = policy;
  x.r.context = context;
  x.r.batch = batch;
  x.r.kv_bytes = filled.bytes_held;
  x.r.dense_bytes = filled.dense_bytes;
  x.r.live_slots = filled.live_slots;
  x.r.compression_ratio = filled.compression_ratio;
  return x;
}

// Whole-model decode steps, every sequence one token. The policies take turns, `steps` at a
// time, so that whatever else the machine does falls on all of them alike.
std::vector<DecodeResult> measure_decode(const Setup& s, const std::vector<std::string>& policies, int64_t context,
                                         int64_t batch, int64_t steps, int64_t repeats) {
  std::vector<Contender> contenders;
  for (const auto& policy : policies) contenders.push_back(fill(s, policy, context, batch, steps * repeats + 1));
  const Transformer& model = *s.model.transformer;
  const at::Tensor tokens = at::randint(s.model.info.config.vocab_size, {batch}, at::kLong);
  auto decode = [&](Contender& x) {
    x.cache->begin_step(x.step);
    model.logits(model.forward(tokens, x.cache->step_positions(), *x.cache));
    x.cache->end_step();
  };
  for (auto& x : contenders) decode(x);  // warm-up: first touch of new pages, thread pool start
  for (int64_t r = 0; r < repeats; ++r)
    for (auto& x : contenders)
      for (int64_t i = 0; i < steps; ++i) {
        const auto t0 = Clock::now();
        decode(x);
        x.r.step_ms.push_back(ms_since(t0));
      }
  std::vector<DecodeResult> out;
  for (auto& x : contenders) {
    x.r.peak_rss = peak_resident_bytes();
    out.push_back(std::move(x.r));
  }
  return out;
}

struct PrefillResult {
  std::string policy;
  int64_t context = 0;
  std::vector<double> tokens_per_s;  // per repeat
};

// One sequence's prompt through the whole model in chunks (the engine's prefill; only the last
// row's logits, as sampling needs), timed from the first chunk to the last. The policies take
// turns per repeat.
std::vector<PrefillResult> measure_prefill(const Setup& s, const std::vector<std::string>& policies, int64_t context,
                                           int64_t repeats) {
  const Transformer& model = *s.model.transformer;
  const at::Tensor tokens = at::randint(s.model.info.config.vocab_size, {context}, at::kLong);
  std::vector<PrefillResult> out;
  for (const auto& policy : policies) out.push_back({policy, context, {}});
  for (int64_t r = 0; r < repeats; ++r)
    for (auto& p : out) {
      auto cache = policy_cache(s, p.policy, 1, context + 1);
      const SequenceId id = cache->add_sequence();
      const auto t0 = Clock::now();
      for (int64_t done = 0; done < context; done += s.chunk) {
        const int64_t n = std::min(s.chunk, context - done);
        cache->begin_step({{id, n}});
        const at::Tensor hidden = model.forward(tokens.narrow(0, done, n), cache->step_positions(), *cache);
        model.logits(hidden.narrow(0, n - 1, 1));
        cache->end_step();
      }
      p.tokens_per_s.push_back(static_cast<double>(context) / (ms_since(t0) / 1e3));
    }
  return out;
}

struct BudgetResult {
  std::string policy;
  int64_t context = 0;
  int64_t max_batch = 0;         // sequences admitted
  int64_t divided = 0;           // the budget over the first sequence's bytes, for comparison
  int64_t bytes_held = 0;        // by the admitted sequences
  int64_t pool_bytes = 0;
};

// Admits sequences of `context` tokens into a cache of `budget` bytes, one after another, until
// one no longer fits: either a prefill chunk of it is refused, or with it the next decode step
// of every admitted sequence (one token each) would be. `limit` bounds the search.
BudgetResult largest_batch(const Setup& s, const std::string& policy, int64_t context, int64_t budget, int64_t limit) {
  auto cache = policy_cache(s, policy, 1, context, budget);
  const auto [k, v] = synthetic_kv(s, std::min(context, s.chunk), cache->options().kv_dtype);
  BudgetResult r{policy, context, 0, 0, 0, cache->stats().pool_bytes};
  std::vector<StepSequence> decode;
  int64_t first_bytes = 0;
  while (r.max_batch < limit) {
    SequenceId id;
    try {
      id = store_context(*cache, k, v, context, s.chunk);
    } catch (const CacheFull&) {
      break;
    }
    decode.push_back({id, 1});
    if (cache->blocks_short(decode) > 0) {
      cache->remove_sequence(id);
      break;
    }
    if (r.max_batch == 0) first_bytes = cache->stats().bytes_held;
    ++r.max_batch;
  }
  r.bytes_held = cache->stats().bytes_held;
  r.divided = first_bytes > 0 ? budget / first_bytes : 0;
  return r;
}

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
            "  budget   with --kv-budget: the most sequences of each context a cache of that size admits\n"
            "Median and [min, max] over --repeats; peak resident memory of the process; --json writes it all\n"
            "(schema in docs/BENCH.md) and bench/plot_decode.py plots it.");
  add_model_options(args);
  add_cache_options(args);
  args.option("contexts", "LIST", "context lengths", "1024,2048,4096,8192,16384")
      .option("batches", "LIST", "batch sizes", "1,4,16,32")
      .option("policies", "LIST", "policies to compare; the first is the reference", "dense,dms")
      .option("steps", "N", "timed decode steps per repeat", "4")
      .option("repeats", "N", "repeats of the timed decode steps and of each prefill", "3")
      .option("max-dense-kv", "BYTES", "skip decode settings whose dense KV would exceed this", "11.5GiB")
      .option("prefill-chunk", "N", "tokens per prefill step (generate's --step-tokens)", "512")
      .option("prefill-max-context", "N", "time prefill only at contexts up to N; 0: no prefill", "4096")
      .option("kv-budget", "BYTES", "find the largest batch each policy fits in this much KV memory (e.g. 2GiB)")
      .option("max-batch", "N", "--kv-budget: stop searching at this many sequences", "4096")
      .option("bandwidth-mib", "N", "size of each array of the bandwidth probe", "256")
      .option("json", "FILE", "write every measurement as JSON");
  if (!args.parse(argc, argv)) return 0;
  const auto contexts = parse_list(args.str("contexts"), "contexts");
  const auto batches = parse_list(args.str("batches"), "batches");
  const auto policies = split_names(args.str("policies"));
  if (policies.empty()) throw UsageError("--policies: empty list");
  const int64_t steps = positive(args, "steps"), repeats = positive(args, "repeats");
  const int64_t max_dense = parse_bytes(args.str("max-dense-kv"), "max-dense-kv");
  const int64_t prefill_max = args.integer("prefill-max-context");
  if (prefill_max < 0) throw UsageError("--prefill-max-context: must be at least 0");
  const int64_t budget = args.has("kv-budget") ? parse_bytes(args.str("kv-budget"), "kv-budget") : 0;
  if (args.has("kv-budget") && budget < 1) throw UsageError("--kv-budget: must be positive");
  const int64_t max_batch = positive(args, "max-batch");
  const int64_t probe_mib = positive(args, "bandwidth-mib");

  Model model = load_model_from_args(args);
  const ModelConfig& c = model.info.config;
  Setup s{model, args, static_cast<int64_t>(at::elementSize(kv_dtype_from_args(args))),
          decode_weight_bytes(model.transformer->weights()), 0, positive(args, "prefill-chunk")};
  for (const auto& policy : policies) policy_cache(s, policy, 1, 1);  // option errors before any measurement
  const Bandwidth bw = measure_bandwidth(probe_mib << 20);
  s.bandwidth = bw.read_bytes_per_s;
  std::printf("model %s (%s), %d threads, KV %s, policies: %s\n", model.info.path.c_str(), arch_name(c.arch).c_str(),
              at::get_num_threads(), args.str("kv-dtype").c_str(), args.str("policies").c_str());
  std::printf("memory bandwidth: read %.2f GB/s, triad %.2f GB/s (arrays of %s); weights read per decode step %s\n",
              bw.read_bytes_per_s / 1e9, bw.triad_bytes_per_s / 1e9, human_bytes(static_cast<double>(bw.array_bytes)).c_str(),
              human_bytes(static_cast<double>(s.weight_bytes)).c_str());

  std::printf("\ndecode: median step time [min, max] over %lld steps; roofline = (weights + live KV) / read bandwidth\n",
              static_cast<long long>(steps * repeats));
  std::printf("%8s %6s %-10s %10s %20s %10s %8s %12s %7s %9s %9s %11s\n", "context", "batch", "policy", "step ms",
              "[min, max]", "roof ms", "of roof", "KV held", "CR", "KV ratio", "speedup", "tok/s");
  json decode_json = json::array();
  for (int64_t batch : batches)
    for (int64_t context : contexts) {
      const int64_t dense = batch * context * c.kv_bytes_per_token(s.kv_elem);
      if (dense > max_dense) {
        std::printf("%8lld %6lld   skipped: dense KV %s > --max-dense-kv\n", static_cast<long long>(context),
                    static_cast<long long>(batch), human_bytes(static_cast<double>(dense)).c_str());
        continue;
      }
      const std::vector<DecodeResult> row = measure_decode(s, policies, context, batch, steps, repeats);
      const double ref_ms = Spread(row.front().step_ms).median;
      for (const DecodeResult& m : row) {
        const Spread sp(m.step_ms);
        const double roof = s.roofline_ms(m.live_slots);
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
                               {"live_kv_bytes", s.live_kv_bytes(m.live_slots)},
                               {"compression_ratio", m.compression_ratio},
                               {"roofline_ms", roof},
                               {"roofline_fraction", roof / sp.median},
                               {"peak_rss_bytes", m.peak_rss}});
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
  const int64_t peak = peak_resident_bytes();
  std::printf("\npeak resident memory of the process: %s\n", human_bytes(static_cast<double>(peak)).c_str());

  if (args.has("json")) {
    const std::string path = args.str("json");
    std::ofstream f(path);
    const json doc = {{"schema", "dms-bench/1"},
                      {"model", model.info.path},
                      {"threads", at::get_num_threads()},
                      {"kv_dtype", args.str("kv-dtype")},
                      {"kv_bytes_per_token", c.kv_bytes_per_token(s.kv_elem)},
                      {"block_size", args.integer("block-size")},
                      {"dms_window", c.dms.window},
                      {"force_evict", args.has("force-evict") ? json(args.number("force-evict")) : json(nullptr)},
                      {"policies", policies},
                      {"machine",
                       {{"read_bandwidth_bytes_per_s", bw.read_bytes_per_s},
                        {"triad_bandwidth_bytes_per_s", bw.triad_bytes_per_s},
                        {"probe_array_bytes", bw.array_bytes}}},
                      {"weight_bytes_per_step", s.weight_bytes},
                      {"decode", decode_json},
                      {"prefill", prefill_json},
                      {"kv_budget", budget_json},
                      {"peak_rss_bytes", peak}};
    f << doc.dump(1) << "\n";
    if (!f) throw Error(path + ": cannot write");
  }
  return 0;
}

}  // namespace dms::cli
