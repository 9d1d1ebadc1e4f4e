// dms solve's sweep on the default model: every (k, limit) point that one run of the largest k
// and limit reports equals a run of its own of k samples with that limit (the same answers, the
// engine's own peak-KV counter), and the KV bytes read equal the cache's live slots summed over
// the decode steps (for dense also their closed form). Then the report's arithmetic on runs
// written by hand.
#include <gtest/gtest.h>

#include <cstdlib>

#include "dms/cache/cache_sizing.h"
#include "dms/engine/engine.h"
#include "dms/eval/task_report.h"
#include "dms/eval/task_sweep.h"
#include "dms/kernels/cpu/kv_quant.h"

namespace dms::eval {
namespace {

const Model& default_model() {
  static const Model model = [] {
    const char* path = std::getenv("DMS_DEFAULT_MODEL");
    if (!path || !*path) throw Error("DMS_DEFAULT_MODEL is not set; run scripts/fetch-default-model");
    return load_model(path, at::kFloat);
  }();
  return model;
}

const std::vector<TaskProblem> kProblems = {
    {"sum",
     "arithmetic",
     "",
     1,
     "Tom has 7 apples. He buys 5 more apples. How many apples does Tom have now?",
     "12",
     {}},
    {"who", "ordering", "", 1, "Anna is taller than Ben. Who is shorter: Anna or Ben?", "Ben", {"Anna", "Ben"}},
};

// What a run of its own gives: k samples of the problem with that limit, in an engine and cache
// of their own; the KV slots read summed from the cache's own per-sequence counter.
struct Alone {
  std::vector<std::vector<int32_t>> tokens;
  int64_t peak_bytes = 0, read_slots = 0;
};

Alone run_alone(const Model& m, const PolicyUnderTest& policy, const TaskProblem& p, const TaskSweepOptions& o,
                int64_t k, int64_t limit) {
  const ModelConfig& c = m.info.config;
  const std::vector<int32_t> prompt = task_prompt(m, p, o.system);
  PagedKVCache cache(
      c, dense_cache_options(c, o.engine.kv_dtype, o.engine.block_size, k, static_cast<int64_t>(prompt.size()) + limit),
      make_policy(policy.policy, policy.options));
  Engine engine(m, cache, EngineOptions{o.engine.step_tokens, k});
  std::vector<GenerationParams> params(k);
  for (int64_t i = 0; i < k; ++i) {
    params[i].max_tokens = limit;
    params[i].sampling = o.sampling;
    params[i].sampling.seed = sample_seed(o.sampling.seed, p.id, i);
    params[i].stop_ids = o.stop_ids;
  }
  const auto ids = engine.submit_samples(prompt, params);
  Alone a;
  while (!engine.idle()) {
    for (int64_t id : ids)  // each decoding sample reads its live keys and the one it adds, per head
      if (engine.sequence(id) >= 0 && !engine.result(id).tokens.empty())
        a.read_slots += cache.sequence_stats(engine.sequence(id)).live_slots + c.n_layers * c.n_kv_heads;
    engine.step();
  }
  for (int64_t id : ids) a.tokens.push_back(engine.result(id).tokens);
  a.peak_bytes = engine.stats().peak_bytes_held;
  return a;
}

TEST(TaskSweep, EveryPointEqualsARunOfItsOwn) {
  const Model& m = default_model();
  const ModelConfig& c = m.info.config;
  TaskSweepOptions o;
  o.samples = {1, 3};
  o.limits = {5, 12};
  o.sampling.temperature = 0.9;
  o.sampling.seed = 5;
  o.stop_ids = c.eos_ids;
  o.engine = {at::kFloat, 4, 512, 0};
  o.problems_at_once = 2;
  PolicyUnderTest dense{"dense", "dense", {}};
  PolicyUnderTest dms{"dms", "dms", {}};
  dms.options.dms = {8, 0.75, 3};  // window 8, 3 of 4 keys flagged at random
  const int64_t slot_bytes = 2 * cpu::kv_row_bytes(at::kFloat, c.head_dim);
  for (const PolicyUnderTest& policy : {dense, dms}) {
    const std::vector<ProblemRun> runs = run_task_sweep(m, policy, kProblems, o);
    ASSERT_EQ(runs.size(), kProblems.size());
    for (size_t p = 0; p < kProblems.size(); ++p) {
      const ProblemRun& run = runs[p];
      EXPECT_EQ(run.id, kProblems[p].id);
      ASSERT_EQ(run.generated.size(), 3u);
      for (size_t l = 0; l < o.limits.size(); ++l)
        for (size_t j = 0; j < o.samples.size(); ++j) {
          const int64_t k = o.samples[j], limit = o.limits[l];
          const std::string where =
              policy.label + " " + run.id + " k=" + std::to_string(k) + " limit=" + std::to_string(limit);
          const Alone a = run_alone(m, policy, kProblems[p], o, k, limit);
          for (int64_t i = 0; i < k; ++i) {
            EXPECT_EQ(static_cast<int64_t>(a.tokens[i].size()), std::min(limit, run.generated[i])) << where;
            EXPECT_EQ(run.answers[l][i], extract_answer(m.tokenizer->decode(a.tokens[i], true), kProblems[p])) << where;
          }
          EXPECT_EQ(run.peak_bytes[l][j], a.peak_bytes) << where;
          EXPECT_EQ(run.read_bytes[l][j], a.read_slots * slot_bytes) << where;
          if (policy.policy == "dense") {  // decode step t of a sample reads prompt + t - 1 keys per head
            int64_t keys = 0;
            for (int64_t i = 0; i < k; ++i)
              for (int64_t t = 2; t <= std::min(limit, run.generated[i]); ++t) keys += run.prompt_tokens + t - 1;
            EXPECT_EQ(run.read_bytes[l][j], keys * c.n_layers * c.n_kv_heads * slot_bytes) << where;
          }
        }
      // The samples differ (else k would mean nothing) and forced eviction holds less than dense.
      EXPECT_GT(run.peak_bytes.back().back(), run.peak_bytes.back().front());
    }
  }
}

ProblemRun hand_run(const std::string& policy, std::vector<std::string> answers, int64_t peak, int64_t read) {
  ProblemRun r;
  r.id = "x";
  r.policy = policy;
  r.answers = {std::move(answers)};
  r.peak_bytes = {{peak, 2 * peak}};
  r.read_bytes = {{read, 2 * read}};
  return r;
}

TEST(TaskReport, PointsAndTheBestWithinAMemoryLevel) {
  const std::vector<TaskProblem> problems = {{"a", "f", "", 1, "q", "3", {}}, {"b", "g", "", 2, "q", "4", {}}};
  // k = 1: a right, b wrong; k = 2 (tie between "5" and "4" in b, first appearance wins): a right, b wrong.
  const std::vector<ProblemRun> runs = {hand_run("dense", {"3", ""}, 100, 1000),
                                        hand_run("dense", {"5", "4"}, 300, 3000)};
  const auto points = task_points(problems, runs, {1, 2}, {64}, true);
  ASSERT_EQ(points.size(), 2u + 4u);
  EXPECT_EQ(points[0].k, 1);
  EXPECT_EQ(points[0].correct, 1);
  EXPECT_EQ(points[0].problems, 2);
  EXPECT_DOUBLE_EQ(points[0].mean_peak_bytes, 200);
  EXPECT_DOUBLE_EQ(points[0].mean_read_bytes, 2000);
  EXPECT_EQ(points[1].k, 2);
  EXPECT_EQ(points[1].correct, 1);
  EXPECT_DOUBLE_EQ(points[1].mean_peak_bytes, 400);
  EXPECT_EQ(points[2].family, "f");  // groups follow, by family, level, limit, k
  EXPECT_EQ(points[2].correct, 1);
  EXPECT_EQ(points[4].family, "g");
  EXPECT_EQ(points[4].correct, 0);
  EXPECT_EQ(best_within(points, "dense", 199, false), nullptr);
  EXPECT_EQ(best_within(points, "dense", 200, false), &points[0]);
  EXPECT_EQ(best_within(points, "dense", 4000, true), &points[0]);  // k = 2 is no better
  EXPECT_EQ(best_within(points, "dms", 1e9, false), nullptr);
  const ProblemRun back = run_from_json(run_json(runs[1]), "here");
  EXPECT_EQ(back.answers, runs[1].answers);
  EXPECT_EQ(back.peak_bytes, runs[1].peak_bytes);
  EXPECT_THROW(run_from_json(nlohmann::json{{"id", "x"}}, "here"), Error);
}

}  // namespace
}  // namespace dms::eval
