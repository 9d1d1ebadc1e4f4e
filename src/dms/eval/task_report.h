// What dms solve reports from its problem runs: accuracy of the majority answer at each
// (samples, token limit) point with the memory spent there, by family and level too, the best
// accuracy a policy reaches within a memory level, and the runs as JSON lines (the partial-results
// file a sweep resumes from).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dms/eval/task_sweep.h"
#include "dms/eval/tasks.h"

namespace dms::eval {

struct TaskPoint {
  std::string policy, family;  // family empty: every family
  int64_t level = -1;          // -1: every level
  int64_t k = 0, limit = 0;
  int64_t correct = 0, problems = 0;
  double mean_peak_bytes = 0;  // per problem: the k samples' peak KV
  double mean_read_bytes = 0;  // per problem: KV bytes the k samples read
  double accuracy() const { return problems > 0 ? static_cast<double>(correct) / static_cast<double>(problems) : 0; }
  Interval ci() const { return wilson_interval(correct, problems); }
};

// Whether the majority of the first k samples' answers at limit index `l` is the problem's answer.
bool solved(const TaskProblem& problem, const ProblemRun& run, size_t l, int64_t k);

// One point per (limit, k) over `runs` (one policy's, the problems' order), and with by_group one
// per (family, level, limit, k) too.
std::vector<TaskPoint> task_points(const std::vector<TaskProblem>& problems, const std::vector<ProblemRun>& runs,
                                   const std::vector<int64_t>& samples, const std::vector<int64_t>& limits,
                                   bool by_group = false);

// The point of `policy` (over every family) with the best accuracy among those whose memory is
// at most `bytes` (peak KV, or KV read with by_read); null when none is.
const TaskPoint* best_within(const std::vector<TaskPoint>& points, const std::string& policy, double bytes,
                             bool by_read);

nlohmann::json run_json(const ProblemRun& run);
// Throws Error naming `where` for a malformed run.
ProblemRun run_from_json(const nlohmann::json& j, const std::string& where);
nlohmann::json point_json(const TaskPoint& p);

}  // namespace dms::eval
