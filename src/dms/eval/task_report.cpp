#include "dms/eval/task_report.h"

#include <map>
#include <tuple>

#include "dms/util/error.h"

namespace dms::eval {

bool solved(const TaskProblem& problem, const ProblemRun& run, size_t l, int64_t k) {
  const auto& answers = run.answers.at(l);
  const std::vector<std::string> first(answers.begin(), answers.begin() + k);
  return majority_answer(first) == problem.answer;
}

std::vector<TaskPoint> task_points(const std::vector<TaskProblem>& problems, const std::vector<ProblemRun>& runs,
                                   const std::vector<int64_t>& samples, const std::vector<int64_t>& limits,
                                   bool by_group) {
  if (problems.size() != runs.size()) fail("task points", "one run per problem expected");
  std::vector<TaskPoint> out;
  std::map<std::tuple<std::string, int64_t, size_t, size_t>, TaskPoint> groups;
  for (size_t l = 0; l < limits.size(); ++l)
    for (size_t j = 0; j < samples.size(); ++j) {
      TaskPoint all;
      all.k = samples[j];
      all.limit = limits[l];
      for (size_t p = 0; p < problems.size(); ++p) {
        const ProblemRun& r = runs[p];
        all.policy = r.policy;
        const bool ok = solved(problems[p], r, l, samples[j]);
        all.correct += ok ? 1 : 0;
        ++all.problems;
        all.mean_peak_bytes += static_cast<double>(r.peak_bytes[l][j]);
        all.mean_read_bytes += static_cast<double>(r.read_bytes[l][j]);
        if (!by_group) continue;
        TaskPoint& g = groups[{problems[p].family, problems[p].level, l, j}];
        g.policy = r.policy;
        g.family = problems[p].family;
        g.level = problems[p].level;
        g.k = samples[j];
        g.limit = limits[l];
        g.correct += ok ? 1 : 0;
        ++g.problems;
        g.mean_peak_bytes += static_cast<double>(r.peak_bytes[l][j]);
        g.mean_read_bytes += static_cast<double>(r.read_bytes[l][j]);
      }
      out.push_back(all);
    }
  for (auto& [key, g] : groups) out.push_back(g);
  for (TaskPoint& p : out)
    if (p.problems > 0) {
      p.mean_peak_bytes /= static_cast<double>(p.problems);
      p.mean_read_bytes /= static_cast<double>(p.problems);
    }
  return out;
}

const TaskPoint* best_within(const std::vector<TaskPoint>& points, const std::string& policy, double bytes,
                             bool by_read) {
  const TaskPoint* best = nullptr;
  for (const TaskPoint& p : points) {
    if (p.policy != policy || !p.family.empty()) continue;
    const double m = by_read ? p.mean_read_bytes : p.mean_peak_bytes;
    if (m <= bytes && (best == nullptr || p.accuracy() > best->accuracy())) best = &p;
  }
  return best;
}

nlohmann::json run_json(const ProblemRun& r) {
  nlohmann::json j = {{"id", r.id},
          {"policy", r.policy},
          {"prompt_tokens", r.prompt_tokens},
          {"generated", r.generated},
          {"answers", r.answers},
          {"peak_kv_bytes", r.peak_bytes},
          {"kv_read_bytes", r.read_bytes},
          {"seen", r.seen},
          {"dense_keys", r.dense_keys},
          {"keys_held", r.keys_held}};
  if (r.budget_ratio > 0) j["budget_ratio"] = r.budget_ratio;
  return j;
}

ProblemRun run_from_json(const nlohmann::json& j, const std::string& where) {
  try {
    ProblemRun r;
    j.at("id").get_to(r.id);
    j.at("policy").get_to(r.policy);
    j.at("prompt_tokens").get_to(r.prompt_tokens);
    j.at("generated").get_to(r.generated);
    j.at("answers").get_to(r.answers);
    j.at("peak_kv_bytes").get_to(r.peak_bytes);
    j.at("kv_read_bytes").get_to(r.read_bytes);
    j.at("seen").get_to(r.seen);
    j.at("dense_keys").get_to(r.dense_keys);
    j.at("keys_held").get_to(r.keys_held);
    if (j.contains("budget_ratio")) j.at("budget_ratio").get_to(r.budget_ratio);
    return r;
  } catch (const nlohmann::json::exception& e) {
    fail(where, std::string("not a problem run: ") + e.what());
  }
}

nlohmann::json point_json(const TaskPoint& p) {
  const Interval ci = p.ci();
  nlohmann::json j = {{"k", p.k},
                      {"max_tokens", p.limit},
                      {"correct", p.correct},
                      {"problems", p.problems},
                      {"accuracy", p.accuracy()},
                      {"ci95", {ci.low, ci.high}},
                      {"mean_peak_kv_bytes", p.mean_peak_bytes},
                      {"mean_kv_read_bytes", p.mean_read_bytes}};
  if (!p.family.empty()) {
    j["family"] = p.family;
    j["level"] = p.level;
  }
  return j;
}

}  // namespace dms::eval
