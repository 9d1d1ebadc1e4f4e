// Accuracy against KV memory on problems with checkable answers (dms solve): k sampled chains of
// thought per problem through the engine (the prompt prefilled once, its blocks shared by the k
// samples), the majority answer, and the memory the k samples spent.
//
// One run per problem and policy gives every (k, limit) point at once: sample i has its own seed,
// and a sample gives the same tokens whatever runs beside it (the engine is batch invariant), so
// the first k samples of a run of the largest k, cut after `limit` tokens, are what a run of k
// samples with that limit produces. Their memory is measured the same way:
//   - peak KV: the most bytes of cache blocks the first k samples held together (a block two of
//     them share counts once) after an engine step, as EngineStats::peak_bytes_held counts them; a
//     sample that has `limit` tokens would have ended in that step, so its blocks are left out;
//   - KV read: every decode step's attention reads each head's live keys and values (and the new
//     token's), summed over the first k samples and their decode steps up to `limit` tokens.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dms/engine/sampler.h"
#include "dms/eval/greedy_runs.h"
#include "dms/eval/tasks.h"
#include "dms/eval/teacher_forced.h"
#include "dms/model/loader.h"

namespace dms::eval {

struct TaskSweepOptions {
  std::vector<int64_t> samples = {1, 2, 4, 8};  // k, ascending
  std::vector<int64_t> limits = {256};          // generated tokens at most, ascending
  SamplingParams sampling;                      // sample i of a problem: seed from sampling.seed, its id and i
  std::vector<int32_t> stop_ids;                // e.g. the model's EOS ids
  std::string system;                           // a system message before each question, if not empty
  EngineSettings engine;
  int64_t problems_at_once = 2;  // problems whose samples share the engine's steps
};

struct ProblemRun {
  std::string id;
  std::string policy;
  double budget_ratio = 0;  // a budget policy's ratio R (0 for the others)
  int64_t prompt_tokens = 0;
  std::vector<int64_t> generated;                 // tokens each sample generated (at most the largest limit)
  std::vector<std::vector<std::string>> answers;  // [limit][sample]: extract_answer of the reply cut there
  std::vector<std::vector<int64_t>> peak_bytes;   // [limit][k index]: peak KV held by the first k samples
  std::vector<std::vector<int64_t>> read_bytes;   // [limit][k index]: KV bytes read, summed over decode steps
  // At each sample's end: tokens it had seen and keys it held, summed over layers and KV heads.
  std::vector<int64_t> seen, dense_keys, keys_held;
};

// The seed of sample `i` of problem `id`: a hash of both and `base`.
uint64_t sample_seed(uint64_t base, const std::string& id, int64_t i);

// The prompt of a problem: its question (after `system`, if any) as a user message through the
// chat template.
std::vector<int32_t> task_prompt(const Model& model, const TaskProblem& p, const std::string& system);

// Runs `problems` under `policy`; `on_done` gets each problem's run as soon as its samples have
// all ended (not in the problems' order), and the runs are returned in the problems' order.
std::vector<ProblemRun> run_task_sweep(const Model& model, const PolicyUnderTest& policy,
                                       const std::vector<TaskProblem>& problems, const TaskSweepOptions& options,
                                       const std::function<void(const ProblemRun&)>& on_done = {});

}  // namespace dms::eval
