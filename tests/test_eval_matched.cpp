// The whole evaluation on the tiny Llama: at every DMS point and in every section, each
// baseline's measured memory ratio is within 5% of the one DMS reached on the same sequences
// (the matched-budget rule), and retrieval scores follow the answers.
#include <gtest/gtest.h>

#include "dms/eval/evaluation.h"
#include "dms/eval/matched_budget.h"
#include "test_eval_fixtures.h"

namespace dms::eval {
namespace {

using test::eval_model;

EvalOptions small_evaluation() {
  EvalOptions o;
  o.teacher_forced.window = 32;
  o.teacher_forced.buckets = ContextBuckets({32, 64});
  o.prompts = 3;
  o.prompt_tokens = 40;
  o.new_tokens = 6;
  o.retrieval_items.lengths = {200, 260};
  o.retrieval_items.depths = {0.0, 1.0};
  o.retrieval_items.trials = 1;
  o.retrieval_items.answer_tokens = 4;
  o.engine.step_tokens = 64;
  return o;
}

// Compares every baseline of a section with the DMS entry before it.
template <typename Entry>
void expect_matched(const std::vector<Entry>& entries, const std::string& what) {
  const Entry* dms = nullptr;
  int64_t baselines = 0;
  for (const auto& e : entries) {
    if (e.policy == "dms") {
      dms = &e;
      continue;
    }
    ASSERT_NE(dms, nullptr) << what;
    const double target = dms->compression.memory_ratio(), got = e.compression.memory_ratio();
    EXPECT_EQ(e.target_cr, target) << what << " " << e.policy;
    EXPECT_TRUE(within_tolerance(got, target)) << what << " " << e.policy << ": memory ratio " << got << " against dms "
                                               << target;
    // A budget keeps as many keys in every head, so its two ratios are one.
    EXPECT_NEAR(e.compression.compression_ratio(), got, 1e-9 * got) << what << " " << e.policy;
    EXPECT_TRUE(e.matched()) << what << " " << e.policy;
    EXPECT_EQ(e.compression.sequences.size(), dms->compression.sequences.size());
    ++baselines;
  }
  EXPECT_GT(baselines, 0) << what;
}

// Documents of unequal lengths (JSONL lines) so the budget ratio has to account for the floor
// on the short ones; forced fractions and the model's own heads.
TEST(Evaluation, EveryBaselineWithinFivePercentOfDmsCompression) {
  const Model& model = eval_model("tiny");
  const auto docs = load_documents(test::eval_fixture("docs.jsonl"), *model.tokenizer, {160, 3, "auto", "text", false});
  for (const std::vector<double>& forced : {std::vector<double>{0.5, 0.85}, std::vector<double>{}}) {
    EvalOptions o = small_evaluation();
    o.forced_fractions = forced;
    const EvalReport r = run_evaluation(model, docs, o);
    ASSERT_EQ(r.points.size(), std::max<size_t>(1, forced.size()));
    EXPECT_EQ(r.baseline_min_tokens, model.info.config.dms.window);
    for (const auto& p : r.points) {
      ASSERT_EQ(p.teacher_forced.size(), 4u) << p.label;
      EXPECT_GT(p.teacher_forced.front().compression.memory_ratio(), 1.3) << p.label << ": too little to match";
      expect_matched(p.teacher_forced, p.label + " teacher-forced");
      expect_matched(p.free_running, p.label + " free-running");
      ASSERT_EQ(p.retrieval.size(), 2u * 4u);
      expect_matched(std::vector<RetrievalEntry>(p.retrieval.begin(), p.retrieval.begin() + 4), p.label + " retrieval 200");
      expect_matched(std::vector<RetrievalEntry>(p.retrieval.begin() + 4, p.retrieval.end()), p.label + " retrieval 260");
      for (const auto& e : p.teacher_forced) {
        EXPECT_EQ(e.quality.overall().tokens, r.dense.overall().tokens);
        EXPECT_EQ(e.compression.ratio_per_layer().size(), static_cast<size_t>(model.info.config.n_layers));
      }
    }
  }
}

TEST(Evaluation, RetrievalItemIsCorrectExactlyWhenItsAnswerAppears) {
  const Model& model = eval_model("tiny");
  const auto docs = load_documents(test::eval_fixture("text.txt"), *model.tokenizer, {120, 2, "auto", "text", false});
  EvalOptions o = small_evaluation();
  o.forced_fractions = {0.5};
  o.free_running = false;
  o.retrieval_items.answer_tokens = 12;
  const EvalReport r = run_evaluation(model, docs, o);
  std::vector<const RetrievalEntry*> entries;
  for (const auto& e : r.dense_retrieval) entries.push_back(&e);
  for (const auto& e : r.points[0].retrieval) entries.push_back(&e);
  for (const RetrievalEntry* e : entries) {
    ASSERT_EQ(e->outputs.size(), e->items.size());
    for (size_t i = 0; i < e->items.size(); ++i) {
      const std::string& answer = r.retrieval_items[e->items[i]].answer;
      EXPECT_EQ(e->correct[i] != 0, answer_found(e->outputs[i], answer)) << e->label << ": '" << e->outputs[i] << "'";
      EXPECT_EQ(r.retrieval_items[e->items[i]].length, e->length);
    }
  }
}

}  // namespace
}  // namespace dms::eval
