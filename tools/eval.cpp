// dms eval: quality of every cache policy against the dense model at matched compression
// (teacher-forced KL, top-1 agreement and perplexity per context bucket; free-running
// agreement; passkey retrieval; compression per layer and head), as tables and JSON.
#include <ATen/Parallel.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>

#include "common.h"
#include "commands.h"
#include "dms/eval/eval_json.h"
#include "dms/eval/evaluation.h"

namespace dms::cli {
namespace {

using namespace dms::eval;

// Progress of each stage on standard error with its rate and ETA: rewritten in place on a
// terminal, otherwise a line every 10 seconds and one at the end.
class Progress {
 public:
  void operator()(const std::string& stage, int64_t done, int64_t total) {
    const auto now = Clock::now();
    if (stage != stage_) {
      stage_ = stage;
      start_ = now;
      last_ = now - std::chrono::hours(1);
    }
    const bool end = done >= total;
    if (!tty_ && !end && now - last_ < std::chrono::seconds(10)) return;
    last_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const bool tokens = stage.starts_with("teacher");
    std::fprintf(stderr, "%s%s: %lld/%lld %s", tty_ ? "\r\033[K" : "", stage.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total), tokens ? "tokens" : "runs");
    if (done > 0) {
      const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0;
      std::fprintf(stderr, ", %.1f %s/s, %s %s", rate, tokens ? "tok" : "run", end ? "took" : "ETA",
                   duration_text(end ? elapsed : rate > 0 ? static_cast<double>(total - done) / rate : 0).c_str());
    }
    std::fprintf(stderr, "%s", end || !tty_ ? "\n" : "");
    std::fflush(stderr);
  }

 private:
  using Clock = std::chrono::steady_clock;
  bool tty_ = isatty(fileno(stderr)) != 0;
  std::string stage_;
  Clock::time_point start_, last_;
};

std::string percent(double share) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100 * share);
  return buf;
}

std::string ratio_text(double r) {
  if (r <= 0) return "-";
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.2fx", r);
  return buf;
}

// The matched column: "-" for dense and dms, else whether the baseline met the matching rule.
const char* matched_text(const PolicyEntry& e) { return e.target_cr > 0 ? (e.matched() ? "yes" : "NO") : "-"; }

void print_teacher_forced(const EvalReport& r) {
  int64_t predictions = 0;
  for (int64_t n : r.document_tokens) predictions += n - 1;
  std::printf("\nteacher-forced quality against dense (%zu documents, %lld predictions per policy)\n",
              r.document_tokens.size(), static_cast<long long>(predictions));
  std::printf("%-12s %-10s %7s %7s %7s %8s %7s %11s %8s %9s\n", "point", "policy", "mem", "CR", "evicted", "budget",
              "matched", "KL nats", "top-1", "ppl");
  const QualityTotals dense = r.dense.overall();
  std::printf("%-12s %-10s %7.2f %7.2f %7s %8s %7s %11.5f %8s %9.3f\n", "", "dense", 1.0, 1.0, "0.0%", "-", "-", 0.0,
              "100.0%", dense.perplexity());
  for (const auto& p : r.points)
    for (size_t i = 0; i < p.teacher_forced.size(); ++i) {
      const auto& e = p.teacher_forced[i];
      const QualityTotals q = e.quality.overall();
      std::printf("%-12s %-10s %7.2f %7.2f %7s %8s %7s %11.5f %8s %9.3f\n", i == 0 ? p.label.c_str() : "",
                  e.policy.c_str(), e.compression.memory_ratio(), e.compression.compression_ratio(),
                  percent(e.compression.eviction_fraction()).c_str(),
                  ratio_text(e.budget_ratio).c_str(), matched_text(e), q.mean_kl(),
                  percent(q.top1()).c_str(), q.perplexity());
    }
  std::printf("\nper context bucket: KL nats / top-1 / ppl\n%-12s %-10s", "point", "policy");
  std::vector<int64_t> shown;
  for (int64_t b = 0; b < r.buckets.count(); ++b)
    if (r.dense.buckets[b].tokens > 0) {
      shown.push_back(b);
      std::printf(" %26s", (r.buckets.label(b) + " (" + std::to_string(r.dense.buckets[b].tokens) + ")").c_str());
    }
  auto row = [&](const std::string& point, const std::string& policy, const QualityStats& q) {
    std::printf("\n%-12s %-10s", point.c_str(), policy.c_str());
    for (int64_t b : shown) {
      const QualityTotals& t = q.buckets[b];
      char cell[64];
      std::snprintf(cell, sizeof cell, "%.5f / %s / %.2f", t.mean_kl(), percent(t.top1()).c_str(), t.perplexity());
      std::printf(" %26s", cell);
    }
  };
  row("", "dense", r.dense);
  for (const auto& p : r.points)
    for (size_t i = 0; i < p.teacher_forced.size(); ++i)
      row(i == 0 ? p.label : "", p.teacher_forced[i].policy, p.teacher_forced[i].quality);
  std::printf("\n");
}

void print_free_running(const EvalReport& r, int64_t new_tokens) {
  std::printf("\nfree-running agreement with dense (%zu prompts of %zu tokens, %lld greedy tokens each)\n",
              r.prompts.size(), r.prompts.front().size(), static_cast<long long>(new_tokens));
  std::printf("%-12s %-10s %7s %7s %8s %7s %12s %10s %15s\n", "point", "policy", "mem", "CR", "budget", "matched",
              "mean prefix", "identical", "position match");
  for (const auto& p : r.points)
    for (size_t i = 0; i < p.free_running.size(); ++i) {
      const auto& e = p.free_running[i];
      std::printf("%-12s %-10s %7.2f %7.2f %8s %7s %12.1f %10s %15s\n", i == 0 ? p.label.c_str() : "", e.policy.c_str(),
                  e.compression.memory_ratio(), e.compression.compression_ratio(), ratio_text(e.budget_ratio).c_str(),
                  matched_text(e), e.mean_prefix(),
                  percent(e.identical_share()).c_str(), percent(e.position_match()).c_str());
    }
}

void print_retrieval(const EvalReport& r, const std::vector<double>& depths, int64_t trials) {
  std::printf("\nretrieval accuracy (%lld items per length and depth)\n%-12s %-10s %7s %7s %7s %8s %7s",
              static_cast<long long>(trials), "point", "policy", "length", "mem", "CR", "budget", "matched");
  for (double d : depths) std::printf(" %7s", ("d=" + std::to_string(d).substr(0, 4)).c_str());
  std::printf(" %8s", "all");
  auto row = [&](const std::string& point, const RetrievalEntry& e) {
    std::printf("\n%-12s %-10s %7lld %7.2f %7.2f %8s %7s", point.c_str(), e.policy.c_str(),
                static_cast<long long>(e.length), e.compression.memory_ratio(), e.compression.compression_ratio(),
                ratio_text(e.budget_ratio).c_str(),
                matched_text(e));
    for (double d : depths) std::printf(" %7s", percent(e.accuracy_at_depth(r.retrieval_items, d)).c_str());
    std::printf(" %8s", percent(e.accuracy()).c_str());
  };
  for (const auto& e : r.dense_retrieval) row("", e);
  for (const auto& p : r.points)
    for (size_t i = 0; i < p.retrieval.size(); ++i) row(i == 0 ? p.label : "", p.retrieval[i]);
  std::printf("\n");
}

}  // namespace

int run_eval(int argc, char** argv) {
  Args args("eval", "--data FILE [options]",
            "Quality of cache policies against the dense model at matched compression. DMS runs first at each\n"
            "operating point (the model's decision heads, or each --force-evict fraction); the memory ratio\n"
            "it reaches (mem: dense keys / keys held; CR is the mean of per-head ratios), measured on the same\n"
            "sequences, sets the budget of streaming, h2o and tova.\n"
            "Sections: teacher-forced KL(dense || policy), top-1 agreement and perplexity per context bucket,\n"
            "with compression per layer and KV head; greedy free-running agreement with dense through the\n"
            "batched engine; passkey retrieval by length and depth. Prints tables; --json writes everything\n"
            "(schema in docs/EVAL.md), and bench/plot_eval.py draws the plots from that file.");
  add_model_options(args, ShippedAdapter::Apply);
  args.option("data", "FILE", "text file (cut into documents of --context tokens) or JSONL (one document per line)")
      .option("format", "auto|text|jsonl", "how to read --data; auto: jsonl for a .jsonl name", "auto")
      .option("field", "NAME", "JSONL: the member holding each document's text, or a conversation rendered with "
                               "the chat template (e.g. messages, as in dms gen-data output)", "text")
      .option("context", "N", "tokens per document", "4096")
      .option("docs", "N", "documents", "4")
      .option("batch", "N", "documents per cache step", "8")
      .option("force-evict", "LIST", "dms: flag keys at random with each fraction F (one operating point each)")
      .option("seed", "N", "seed of the forced eviction draws", "0")
      .option("baselines", "LIST", "budget policies compared at the DMS memory ratio; 'none' for none", "streaming,h2o,tova")
      .option("sinks", "N", "streaming: first tokens kept", "4")
      .option("h2o-recent", "S", "h2o: share of the budget kept for recent tokens", "0.5")
      .option("baseline-min-tokens", "N", "the fewest keys a baseline keeps per head", "the DMS window")
      .option("chunk", "exact|N", "teacher-forced tokens per step: exact steps budget policies one token at a time "
                                  "(they evict only when a step ends); N steps every policy N tokens", "exact")
      .option("dense-step", "N", "exact: tokens per step of dense and dms (exact in chunks), and per comparison", "256")
      .option("buckets", "LIST", "context bucket bounds in tokens", "1024,2048,4096,8192")
      .option("kv-dtype", "f32|bf16|f16|q8", "KV cache storage (q8: int8 with a scale per 32 values)", "f32")
      .option("reference-kv-dtype", "f32|bf16|f16|q8", "KV cache storage of the dense reference", "f32")
      .option("block-size", "N", "key slots per cache block", std::to_string(kDefaultBlockSize))
      .option("prompts", "N", "free-running prompts", "8")
      .option("prompt-tokens", "N", "free-running prompt length", "256")
      .option("new-tokens", "N", "free-running greedy tokens per prompt", "64")
      .flag("no-free-running", "skip the free-running section")
      .option("retrieval-lengths", "LIST", "retrieval prompt lengths in tokens", "1024,2048,4096")
      .option("retrieval-depths", "LIST", "needle depths in [0, 1]", "0,0.25,0.5,0.75,1")
      .option("retrieval-trials", "N", "items per length and depth", "2")
      .flag("no-retrieval", "skip the retrieval section")
      .option("engine-step-tokens", "N", "free-running and retrieval: most tokens per engine step (prefill chunk)", "512")
      .option("json", "FILE", "write the whole report as JSON");
  if (!args.parse(argc, argv)) return 0;
  if (!args.has("data")) throw UsageError("--data FILE is required");

  EvalOptions o;
  if (args.has("force-evict")) o.forced_fractions = args.numbers("force-evict", 0, 1);
  const int64_t seed = args.integer("seed");
  if (seed < 0) throw UsageError("--seed: must be >= 0");
  o.seed = static_cast<uint64_t>(seed);
  o.baselines = args.str("baselines") == "none" ? std::vector<std::string>{} : args.names("baselines");
  for (const auto& b : o.baselines)
    if (!is_budget_policy(b)) throw UsageError("--baselines: '" + b + "' is not one of " + joined(budget_policy_names()));
  o.sinks = args.at_least("sinks", 0);
  o.recent_share = args.number("h2o-recent");
  if (!(o.recent_share >= 0 && o.recent_share <= 1)) throw UsageError("--h2o-recent: must be in [0, 1]");
  if (args.has("baseline-min-tokens")) {
    o.baseline_min_tokens = args.at_least("baseline-min-tokens", 1);
    if (o.baseline_min_tokens <= o.sinks && !o.baselines.empty())
      throw UsageError("--baseline-min-tokens: must exceed --sinks (streaming keeps the sinks and the newest key)");
  }
  TeacherForcedOptions& tf = o.teacher_forced;
  tf.chunk = args.str("chunk") == "exact" ? 0 : args.at_least("chunk", 1);
  tf.window = args.at_least("dense-step", 1);
  tf.batch = args.at_least("batch", 1);
  tf.kv_dtype = kv_dtype_from_args(args);
  tf.reference_kv_dtype = parse_kv_dtype(args.str("reference-kv-dtype"), "reference-kv-dtype");
  tf.block_size = args.at_least("block-size", 1);
  try {
    tf.buckets = ContextBuckets(args.integers("buckets", 1));
  } catch (const UsageError&) {
    throw;
  } catch (const Error& e) {
    throw UsageError(std::string("--buckets: ") + e.what());
  }
  o.engine = {tf.kv_dtype, tf.block_size, args.at_least("engine-step-tokens", 1), 64};
  o.free_running = !args.has("no-free-running");
  o.prompts = args.at_least("prompts", 1);
  o.prompt_tokens = args.at_least("prompt-tokens", 1);
  o.new_tokens = args.at_least("new-tokens", 1);
  o.retrieval = !args.has("no-retrieval");
  o.retrieval_items.lengths = args.integers("retrieval-lengths", 1);
  o.retrieval_items.depths = args.numbers("retrieval-depths", 0, 1);
  o.retrieval_items.trials = args.at_least("retrieval-trials", 1);
  DocumentOptions d;
  d.context = args.at_least("context", 2);
  d.max_documents = args.at_least("docs", 1);
  d.format = args.str("format");
  if (d.format != "auto" && d.format != "text" && d.format != "jsonl")
    throw UsageError("--format: expected auto, text or jsonl, got '" + d.format + "'");
  d.field = args.str("field");

  Model model = load_model_from_args(args, ShippedAdapter::Apply);
  const ModelConfig& c = model.info.config;
  if (o.forced_fractions.empty() && !c.dms.decides())
    throw UsageError(model.info.path + " has no DMS decision heads: pass --dms-adapter, or --force-evict LIST to flag keys "
                     "at random");
  d.add_bos = model.tokenizer->add_bos_default();
  d.chat_template = &model.chat_template;
  o.retrieval_items.add_bos = d.add_bos;
  const std::vector<Document> docs = load_documents(args.str("data"), *model.tokenizer, d);
  for (int64_t length : o.retrieval_items.lengths)
    if (o.retrieval && length + o.retrieval_items.answer_tokens > c.max_position)
      throw UsageError("--retrieval-lengths: " + std::to_string(length) + " tokens and the answer exceed the model's context of " +
                       std::to_string(c.max_position));
  std::printf("model %s (%s), %d threads, KV %s, DMS window %lld, %zu documents from %s\n", model.info.path.c_str(),
              arch_name(c.arch).c_str(), at::get_num_threads(), args.str("kv-dtype").c_str(),
              static_cast<long long>(c.dms.window), docs.size(), args.str("data").c_str());
  std::fflush(stdout);
  Progress progress;
  o.progress = std::ref(progress);

  const EvalReport report = run_evaluation(model, docs, o);
  print_teacher_forced(report);
  if (o.free_running) print_free_running(report, o.new_tokens);
  if (o.retrieval) print_retrieval(report, o.retrieval_items.depths, o.retrieval_items.trials);
  std::printf("\n%s in all\n", duration_text(report.seconds).c_str());

  if (args.has("json")) {
    const nlohmann::json settings = {
        {"kv_dtype", args.str("kv-dtype")}, {"reference_kv_dtype", args.str("reference-kv-dtype")},
        {"block_size", tf.block_size},
        {"chunk", tf.chunk == 0 ? nlohmann::json("exact") : nlohmann::json(tf.chunk)}, {"dense_step", tf.window},
        {"batch", tf.batch}, {"context", d.context}, {"seed", o.seed}, {"sinks", o.sinks},
        {"h2o_recent_share", o.recent_share}, {"baselines", o.baselines}, {"new_tokens", o.new_tokens},
        {"engine_step_tokens", o.engine.step_tokens}, {"retrieval_trials", o.retrieval_items.trials},
        {"retrieval_answer_tokens", o.retrieval_items.answer_tokens}, {"threads", at::get_num_threads()}};
    const nlohmann::json header = {{"model", model.info.path},
                                   {"dms_adapter", args.has("dms-adapter") ? nlohmann::json(args.str("dms-adapter")) : nlohmann::json(nullptr)},
                                   {"data", args.str("data")},
                                   {"settings", settings}};
    const std::string path = args.str("json");
    std::ofstream f(path);
    f << report_json(report, header).dump(1) << "\n";
    if (!f) throw Error(path + ": cannot write");
    std::printf("JSON: %s (plots: python bench/plot_eval.py %s --out DIR)\n", path.c_str(), path.c_str());
  }
  return 0;
}

}  // namespace dms::cli
