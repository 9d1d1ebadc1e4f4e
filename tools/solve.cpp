// dms solve: accuracy on problems with checkable answers against the KV memory spent, per
// policy: k sampled chains of thought per problem, the majority answer, and the samples' peak KV
// and KV bytes read, at each sample count and token limit. Resumable from a partial-results file.
#include <ATen/Parallel.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"
#include "dms/eval/matched_budget.h"
#include "dms/eval/task_report.h"
#include "dms/util/jsonl_appender.h"

namespace dms::cli {
namespace {

using namespace dms::eval;
using nlohmann::json;

uint64_t file_hash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  uint64_t h = 1469598103934665603ull;
  for (char c; in.get(c);) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}

// The runs a partial-results file holds, by policy and problem id, after checking that it was
// written with `settings` (its first line).
std::map<std::string, std::map<std::string, ProblemRun>> read_partial(const std::string& path, const json& settings) {
  std::map<std::string, std::map<std::string, ProblemRun>> runs;
  repair_jsonl_tail(path);
  std::ifstream in(path);
  if (!in) return runs;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    const std::string where = path + ":" + std::to_string(number);
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      throw Error(where + ": not JSON: " + e.what());
    }
    if (number == 1) {
      if (!j.contains("settings")) throw Error(where + ": not a dms solve partial-results file (no 'settings')");
      for (const auto& [key, value] : settings.items())
        if (!j["settings"].contains(key) || j["settings"][key] != value)
          throw Error(path + " was written with other settings ('" + key +
                      "' differs): pass the same options, or "
                      "another --partial file");
      continue;
    }
    ProblemRun r = run_from_json(j, where);
    runs[r.policy][r.id] = std::move(r);
  }
  return runs;
}

std::string mib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", bytes / (1024.0 * 1024.0));
  return buf;
}

std::string accuracy_text(const TaskPoint& p) {
  const Interval ci = p.ci();
  char buf[48];
  std::snprintf(buf, sizeof buf, "%5.1f%% [%4.1f, %5.1f]", 100 * p.accuracy(), 100 * ci.low, 100 * ci.high);
  return buf;
}

void print_points(const std::vector<TaskPoint>& points) {
  std::printf("\n%-10s %6s %4s %22s %12s %12s\n", "policy", "tokens", "k", "accuracy [95% CI]", "peak KV MiB",
              "KV read MiB");
  for (const TaskPoint& p : points)
    if (p.family.empty())
      std::printf("%-10s %6lld %4lld %22s %12s %12s\n", p.policy.c_str(), static_cast<long long>(p.limit),
                  static_cast<long long>(p.k), accuracy_text(p).c_str(), mib(p.mean_peak_bytes).c_str(),
                  mib(p.mean_read_bytes).c_str());
}

void print_groups(const std::vector<TaskPoint>& points, int64_t k, int64_t limit) {
  std::printf("\nby family and level (k = %lld, %lld tokens)\n%-10s %-12s %5s %22s\n", static_cast<long long>(k),
              static_cast<long long>(limit), "policy", "family", "level", "accuracy [95% CI]");
  for (const TaskPoint& p : points)
    if (!p.family.empty() && p.k == k && p.limit == limit)
      std::printf("%-10s %-12s %5lld %22s\n", p.policy.c_str(), p.family.c_str(), static_cast<long long>(p.level),
                  accuracy_text(p).c_str());
}

// For each point of `reference` (by memory): the best accuracy each policy reaches within that memory.
void print_frontier(const std::vector<TaskPoint>& points, const std::vector<std::string>& policies,
                    const std::string& reference, bool by_read) {
  std::vector<const TaskPoint*> ref;
  for (const TaskPoint& p : points)
    if (p.policy == reference && p.family.empty()) ref.push_back(&p);
  std::sort(ref.begin(), ref.end(), [&](const TaskPoint* a, const TaskPoint* b) {
    return (by_read ? a->mean_read_bytes : a->mean_peak_bytes) < (by_read ? b->mean_read_bytes : b->mean_peak_bytes);
  });
  std::printf("\nbest accuracy within the %s of each %s point\n%12s", by_read ? "KV bytes read" : "peak KV",
              reference.c_str(), by_read ? "read MiB" : "peak MiB");
  for (const auto& name : policies) std::printf(" %18s", name.c_str());
  std::printf("\n");
  for (const TaskPoint* r : ref) {
    const double bytes = by_read ? r->mean_read_bytes : r->mean_peak_bytes;
    std::printf("%12s", mib(bytes).c_str());
    for (const auto& name : policies) {
      const TaskPoint* b = best_within(points, name, bytes, by_read);
      char cell[40] = "-";
      if (b != nullptr)
        std::snprintf(cell, sizeof cell, "%5.1f%% k%lld/%lld", 100 * b->accuracy(), static_cast<long long>(b->k),
                      static_cast<long long>(b->limit));
      std::printf(" %18s", cell);
    }
    std::printf("\n");
  }
}

}  // namespace

int run_solve(int argc, char** argv) {
  Args args("solve", "--tasks FILE [options]",
            "Accuracy on problems with checkable answers (data/tasks/*.jsonl, scripts/gen-tasks) against the KV\n"
            "memory spent. For each policy, each problem's question goes through the chat template; k chains\n"
            "are sampled from its one prefill (the prompt's blocks shared), each answer is read from the reply,\n"
            "and the majority answer counts. Every sample count in --samples and limit in --max-tokens comes\n"
            "from one run of the largest (sample i has its own seed; a shorter limit cuts the same reply). The\n"
            "memory per problem: the peak KV the k samples held together, and the KV bytes their decode steps\n"
            "read. DMS runs first; streaming, h2o and tova then get the memory ratio it reached. --partial\n"
            "makes a long sweep resumable; --json writes everything (schema in docs/EVAL.md), and\n"
            "bench/plot_tasks.py plots accuracy against memory.");
  add_model_options(args, ShippedAdapter::Apply);
  args.option("tasks", "FILE", "problems, one JSON object per line (docs/EVAL.md)")
      .option("problems", "N", "the first N problems only", "all")
      .option("policies", "LIST", "policies, from dense, dms, streaming, h2o, tova", "dense,dms,h2o,tova,streaming")
      .option("samples", "LIST", "sample counts k, ascending", "1,2,4,8,16,32")
      .option("max-tokens", "LIST", "limits on each reply's tokens, ascending", "128,256")
      .option("temperature", "T", "sampling temperature; 0 decodes greedily", "0.7")
      .option("top-k", "K", "sample among the K most likely tokens; 0: off", "0")
      .option("top-p", "P", "sample among the most likely tokens holding mass P; 1: off", "0.9")
      .option("min-p", "P", "drop tokens less likely than P times the most likely one; 0: off", "0.05")
      .option("seed", "N", "seed of every sample's seed", "0")
      .option("system", "TEXT", "a system message before each question")
      .option("force-evict", "F", "dms: flag each key with probability F instead of the model's decisions")
      .option("sinks", "N", "streaming: first tokens kept", "4")
      .option("h2o-recent", "S", "h2o: share of the budget kept for recent tokens", "0.5")
      .option("baseline-min-tokens", "N", "the fewest keys a baseline keeps per head", "the DMS window")
      .option("kv-dtype", "f32|bf16|f16|q8", "KV cache storage (q8: int8 with a scale per 32 values)", "bf16")
      .option("block-size", "N", "key slots per cache block", std::to_string(kDefaultBlockSize))
      .option("at-once", "N", "problems whose samples share the engine's steps", "2")
      .option("engine-step-tokens", "N", "most tokens per engine step (prefill chunk)", "512")
      .option("partial", "FILE", "partial results: each finished problem is appended, and a rerun skips those it holds")
      .option("json", "FILE", "write the whole report as JSON");
  if (!args.parse(argc, argv)) return 0;
  if (!args.has("tasks")) throw UsageError("--tasks FILE is required");

  TaskSweepOptions o;
  o.samples = args.integers("samples", 1);
  o.limits = args.integers("max-tokens", 1);
  if (!std::is_sorted(o.samples.begin(), o.samples.end()) ||
      std::adjacent_find(o.samples.begin(), o.samples.end()) != o.samples.end())
    throw UsageError("--samples: must be ascending");
  if (!std::is_sorted(o.limits.begin(), o.limits.end()) ||
      std::adjacent_find(o.limits.begin(), o.limits.end()) != o.limits.end())
    throw UsageError("--max-tokens: must be ascending");
  o.sampling.temperature = args.number("temperature");
  o.sampling.top_k = args.integer("top-k");
  o.sampling.top_p = args.number("top-p");
  o.sampling.min_p = args.number("min-p");
  const int64_t seed = args.integer("seed");
  if (seed < 0) throw UsageError("--seed: must be >= 0");
  o.sampling.seed = static_cast<uint64_t>(seed);
  try {
    o.sampling.validate();
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  if (args.has("system")) o.system = args.str("system");
  o.engine = {kv_dtype_from_args(args), args.at_least("block-size", 1), args.at_least("engine-step-tokens", 1), 0};
  o.problems_at_once = args.at_least("at-once", 1);
  const std::vector<std::string> policies = args.names("policies");
  for (const auto& name : policies)
    if (std::find(policy_names().begin(), policy_names().end(), name) == policy_names().end())
      throw UsageError("--policies: unknown eviction policy '" + name + "' (" + joined(policy_names()) + ")");
  const bool has_dms = std::find(policies.begin(), policies.end(), "dms") != policies.end();
  for (const auto& name : policies)
    if (is_budget_policy(name) && !has_dms)
      throw UsageError("--policies: " + name + " needs dms in the list (its budget is the memory ratio DMS reaches)");
  const double recent_share = args.number("h2o-recent");
  if (!(recent_share >= 0 && recent_share <= 1)) throw UsageError("--h2o-recent: must be in [0, 1]");
  double forced = -1;
  if (args.has("force-evict")) {
    forced = args.number("force-evict");
    if (!(forced >= 0 && forced <= 1)) throw UsageError("--force-evict: must be in [0, 1]");
  }

  std::vector<TaskProblem> problems = load_tasks(args.str("tasks"));
  if (args.has("problems")) problems.resize(std::min<size_t>(problems.size(), args.at_least("problems", 1)));
  Model model = load_model_from_args(args, ShippedAdapter::Apply);
  const ModelConfig& c = model.info.config;
  if (has_dms && forced < 0 && !c.dms.decides())
    throw UsageError(model.info.path +
                     " has no DMS decision heads: pass --dms-adapter, or --force-evict F to flag keys "
                     "at random");
  o.stop_ids = c.eos_ids;
  const int64_t sinks = args.at_least("sinks", 0);
  const int64_t min_tokens =
      args.has("baseline-min-tokens") ? args.at_least("baseline-min-tokens", 1) : std::max(c.dms.window, sinks + 1);

  const json settings = {{"model", model.info.path},
                         {"dms_adapter", args.has("dms-adapter") ? json(args.str("dms-adapter")) : json(nullptr)},
                         {"tasks_fnv1a", file_hash(args.str("tasks"))},
                         {"samples", o.samples},
                         {"max_tokens", o.limits},
                         {"temperature", o.sampling.temperature},
                         {"top_k", o.sampling.top_k},
                         {"top_p", o.sampling.top_p},
                         {"min_p", o.sampling.min_p},
                         {"seed", o.sampling.seed},
                         {"system", o.system},
                         {"kv_dtype", args.str("kv-dtype")},
                         {"block_size", o.engine.block_size},
                         {"dms_window", c.dms.window},
                         {"force_evict", forced},
                         {"sinks", sinks},
                         {"h2o_recent_share", recent_share},
                         {"baseline_min_tokens", min_tokens}};
  std::map<std::string, std::map<std::string, ProblemRun>> done;
  std::unique_ptr<JsonlAppender> partial;
  if (args.has("partial")) {
    const std::string path = args.str("partial");
    done = read_partial(path, settings);
    const bool fresh = !std::ifstream(path).good() || std::ifstream(path).peek() == std::ifstream::traits_type::eof();
    partial = std::make_unique<JsonlAppender>(path);
    if (fresh) partial->append({{"settings", settings}});
  }
  std::printf("model %s, %d threads, KV %s, DMS window %lld, %zu problems from %s\n", model.info.path.c_str(),
              at::get_num_threads(), args.str("kv-dtype").c_str(), static_cast<long long>(c.dms.window),
              problems.size(), args.str("tasks").c_str());
  std::fflush(stdout);

  // dms first: the baselines' budget is the memory ratio it reaches.
  std::vector<std::string> order = policies;
  std::stable_partition(order.begin(), order.end(), [](const std::string& p) { return p == "dms"; });
  std::map<std::string, std::vector<ProblemRun>> results;
  std::map<std::string, double> budget_ratio, memory_ratio;
  const bool tty = isatty(fileno(stderr)) != 0;
  for (const auto& name : order) {
    PolicyUnderTest policy{name, name, {}};
    policy.options.dms = {c.dms.window, forced, o.sampling.seed};
    if (is_budget_policy(name)) {
      std::vector<int64_t> seen;  // dms ran first: its samples' lengths and memory ratio set the budget
      for (const auto& r : results["dms"]) seen.insert(seen.end(), r.seen.begin(), r.seen.end());
      budget_ratio[name] = matched_ratio(seen, std::max(1.0, memory_ratio["dms"]), min_tokens);
      policy.options.budget = Budget{budget_ratio[name], 0, min_tokens};
      policy.options.sinks = sinks;
      policy.options.recent_share = recent_share;
    }
    std::vector<TaskProblem> todo;  // what the partial file lacks, or holds at another budget (DMS's runs changed)
    for (const auto& p : problems)
      if (!done[name].contains(p.id) || done[name].at(p.id).budget_ratio != policy.options.budget.compression_ratio)
        todo.push_back(p);
    const auto t0 = std::chrono::steady_clock::now();
    int64_t finished = 0, tokens = 0;
    auto last = t0 - std::chrono::hours(1);
    const auto progress = [&](const ProblemRun& r) {
      ++finished;
      for (int64_t n : r.generated) tokens += n;
      if (partial) partial->append(run_json(r));
      const auto now = std::chrono::steady_clock::now();
      const bool end = finished == static_cast<int64_t>(todo.size());
      if (!tty && !end && now - last < std::chrono::seconds(10)) return;
      last = now;
      const double s = std::chrono::duration<double>(now - t0).count();
      const double eta = s / static_cast<double>(finished) * static_cast<double>(todo.size() - finished);
      std::fprintf(stderr, "%s%s: %lld/%zu problems, %.1f tok/s, %s %s%s", tty ? "\r\033[K" : "", name.c_str(),
                   static_cast<long long>(finished), todo.size(), s > 0 ? static_cast<double>(tokens) / s : 0.0,
                   end ? "took" : "ETA", duration_text(end ? s : eta).c_str(), end || !tty ? "\n" : "");
      std::fflush(stderr);
    };
    if (!todo.empty()) {
      for (auto& r : run_task_sweep(model, policy, todo, o, progress)) done[name][r.id] = std::move(r);
    }
    int64_t dense_keys = 0, held = 0;
    for (const auto& p : problems) {
      const ProblemRun& r = done[name].at(p.id);
      results[name].push_back(r);
      for (size_t i = 0; i < r.seen.size(); ++i) {
        dense_keys += r.dense_keys[i];
        held += r.keys_held[i];
      }
    }
    memory_ratio[name] = static_cast<double>(dense_keys) / static_cast<double>(std::max<int64_t>(held, 1));
  }

  std::vector<TaskPoint> points;
  for (const auto& name : policies) {
    auto p = task_points(problems, results[name], o.samples, o.limits, true);
    points.insert(points.end(), p.begin(), p.end());
  }
  std::printf("\nmemory ratio (dense keys / keys held, at the samples' ends):");
  for (const auto& name : policies) {
    std::printf(" %s %.2fx", name.c_str(), memory_ratio[name]);
    if (budget_ratio.contains(name)) std::printf(" (budget %.2fx)", budget_ratio[name]);
  }
  std::printf("\n");
  print_points(points);
  print_groups(points, o.samples.front(), o.limits.back());
  if (std::find(policies.begin(), policies.end(), "dense") != policies.end() && policies.size() > 1) {
    print_frontier(points, policies, "dense", false);
    print_frontier(points, policies, "dense", true);
  }

  if (args.has("json")) {
    json out = {{"settings", settings},
                {"tasks", args.str("tasks")},
                {"problems", problems.size()},
                {"threads", at::get_num_threads()}};
    for (const auto& name : policies) {
      json pj = {{"name", name},
                 {"memory_ratio", memory_ratio[name]},
                 {"budget_ratio", budget_ratio.contains(name) ? json(budget_ratio[name]) : json(nullptr)}};
      for (const TaskPoint& p : points)
        if (p.policy == name) pj[p.family.empty() ? "points" : "by_family"].push_back(point_json(p));
      for (const auto& r : results[name]) pj["runs"].push_back(run_json(r));
      out["policies"].push_back(pj);
    }
    const std::string path = args.str("json");
    std::ofstream f(path);
    f << out.dump(1) << "\n";
    if (!f) throw Error(path + ": cannot write");
    std::printf("\nJSON: %s (plots: python bench/plot_tasks.py %s --out DIR)\n", path.c_str(), path.c_str());
  }
  return 0;
}

}  // namespace dms::cli
