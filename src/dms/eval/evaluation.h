// `dms eval` as a library: quality of every cache policy against the dense model at matched
// compression, on one model and one set of documents.
//
// Operating points. DMS runs at one or more points: the model's own decisions, or each forced
// eviction fraction given (for models without decision heads). At every point and in every
// section DMS runs first; the memory ratio it reached there (dense keys over keys held,
// compression.h), measured, sets the budget of each baseline (matched_budget.h), which is then
// run and measured again. Matching on memory rather than on the mean of per-head ratios keeps a
// DMS model whose heads differ from being compared with baselines holding far less.
//
// Sections:
//   teacher-forced  KL(dense || policy), top-1 agreement, perplexity per context bucket, and
//                   compression per (layer, KV head) (teacher_forced.h). Two passes over the
//                   documents: dense + every DMS point, then dense + every matched baseline.
//   free-running    greedy continuations of prompts cut from the documents, compared with
//                   dense's: tokens equal until the first divergence, and position by position.
//   retrieval       passkey items (retrieval.h) at each length, accuracy per length and depth.
//
// Baseline budgets never go below min_tokens keys per head; by default that is the DMS window,
// which DMS itself always keeps (the last `window` keys are visible, flagged or not), so the
// floor is one DMS has too and any DMS compression ratio can be matched.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "dms/cache/eviction_policy.h"
#include "dms/eval/documents.h"
#include "dms/eval/greedy_runs.h"
#include "dms/eval/metrics.h"
#include "dms/eval/retrieval.h"
#include "dms/eval/teacher_forced.h"
#include "dms/model/loader.h"

namespace dms::eval {

struct EvalOptions {
  // Forced eviction fractions in [0, 1], one point each; empty: the model's decision heads.
  std::vector<double> forced_fractions;
  uint64_t seed = 0;  // of the forced draws
  std::vector<std::string> baselines = budget_policy_names();
  int64_t sinks = 4;            // streaming
  double recent_share = 0.5;    // h2o
  int64_t baseline_min_tokens = -1;  // -1: the model's DMS window (at least sinks + 1)

  TeacherForcedOptions teacher_forced;
  bool free_running = true;
  int64_t prompts = 8, prompt_tokens = 256, new_tokens = 64;
  bool retrieval = true;
  RetrievalOptions retrieval_items;
  EngineSettings engine;

  // Progress of a long stage: `done` of `total` units (tokens or runs) so far.
  std::function<void(const std::string& stage, int64_t done, int64_t total)> progress;
};

// A policy's part of one section at one point.
struct PolicyEntry {
  std::string label, policy;
  double budget_ratio = 0;  // baselines: the budget's ratio R; 0 for dense and dms
  double target_cr = 0;     // baselines: the DMS memory ratio matched; 0 for dense and dms
  CompressionStats compression;
  // Baselines: the measured memory ratio within kMatchTolerance of the target. Others: true.
  bool matched() const;
};

struct TeacherForcedEntry : PolicyEntry {
  QualityStats quality;
};

struct FreeRunningEntry : PolicyEntry {
  std::vector<Agreement> agreement;  // per prompt, against dense
  double mean_prefix() const;
  double identical_share() const;   // prompts whose continuation equals dense's
  double position_match() const;    // positions equal, over all prompts
};

struct RetrievalEntry : PolicyEntry {
  int64_t length = 0;
  std::vector<size_t> items;        // indices into EvalReport::retrieval_items
  std::vector<uint8_t> correct;     // per item
  std::vector<std::string> outputs; // per item, the generated text
  double accuracy() const;
  double accuracy_at_depth(const std::vector<RetrievalItem>& all, double depth) const;
};

struct PointReport {
  std::string label;            // "dms" or "dms f=0.75"
  double forced_fraction = -1;  // -1: the model's decisions
  std::vector<TeacherForcedEntry> teacher_forced;  // dms, then the baselines
  std::vector<FreeRunningEntry> free_running;
  std::vector<RetrievalEntry> retrieval;           // per length: dms, then the baselines
};

struct EvalReport {
  ContextBuckets buckets;
  std::vector<int64_t> document_tokens;
  int64_t window = 0;               // DMS window
  int64_t baseline_min_tokens = 0;
  QualityStats dense;                           // teacher-forced, the reference's own
  std::vector<RetrievalEntry> dense_retrieval;  // per length
  std::vector<RetrievalItem> retrieval_items;
  std::vector<std::vector<int32_t>> prompts;    // free-running
  std::vector<PointReport> points;
  double seconds = 0;
};

// Throws Error for bad options (naming them) and whatever loading or running throws.
EvalReport run_evaluation(const Model& model, const std::vector<Document>& docs, const EvalOptions& options);

// Free-running prompts: consecutive prompt_tokens-token pieces of the documents, at most n.
std::vector<std::vector<int32_t>> cut_prompts(const std::vector<Document>& docs, int64_t n, int64_t prompt_tokens);

}  // namespace dms::eval
