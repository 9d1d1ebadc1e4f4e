// The teacher-forced runner and the greedy runs on the tiny Llama of make_eval_fixtures.py:
// dense perplexity against transformers' logits, a model against itself, policies that keep
// every key against dense, DMS exact in chunks, budget compression per head re-derived.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dms/eval/greedy_runs.h"
#include "dms/eval/teacher_forced.h"
#include "test_eval_fixtures.h"

namespace dms::eval {
namespace {

using test::eval_model;

TeacherForcedOptions small_options(std::vector<int64_t> buckets = {32, 64, 128}) {
  TeacherForcedOptions o;
  o.window = 24;  // windows that do not line up with the buckets or the documents
  o.batch = 4;
  o.score_rows = 50;
  o.buckets = ContextBuckets(std::move(buckets));
  return o;
}

std::vector<Document> text_documents(int64_t context, int64_t n) {
  return load_documents(test::eval_fixture("text.txt"), *eval_model("tiny").tokenizer, {context, n, "text", "text", false});
}

PolicyUnderTest keep_all(const std::string& policy) {
  PolicyUnderTest p{policy, policy, {}};
  p.options.budget = Budget{0, 100000, 64};  // more keys than any document has
  return p;
}

PolicyUnderTest dms_policy(double forced, int64_t window) {
  PolicyUnderTest p{"dms", "dms", {}};
  p.options.dms = {window, forced, 7};
  return p;
}

// Tolerance: our fp32 forward against transformers' differs by about 1e-5 relative in the
// logits, so a mean NLL near 9 nats moves by well under 1e-4 relative in perplexity.
TEST(TeacherForced, DensePerplexityMatchesTransformersLogits) {
  const std::vector<Document> docs = {test::reference_document(0), test::reference_document(1)};
  const TeacherForcedOptions o = small_options();
  QualityStats expected;
  for (int d = 0; d < 2; ++d) {
    const at::Tensor lp = at::log_softmax(test::reference_logits(d).to(at::kDouble), -1);
    RowScores s;
    std::vector<int64_t> pos;
    for (size_t i = 0; i + 1 < docs[d].size(); ++i) {
      s.nll.push_back(-lp[static_cast<int64_t>(i)][docs[d][i + 1]].item<double>());
      s.kl.push_back(0);
      s.agree.push_back(1);
      pos.push_back(static_cast<int64_t>(i));
    }
    accumulate(expected, o.buckets, s, pos);
  }
  for (int64_t batch : {1, 2}) {
    TeacherForcedOptions ob = o;
    ob.batch = batch;
    const TeacherForcedResult r = run_teacher_forced(*eval_model("tiny_base").transformer, docs, {}, ob);
    ASSERT_EQ(r.dense.buckets.size(), expected.buckets.size());
    for (size_t b = 0; b < expected.buckets.size(); ++b) {
      EXPECT_EQ(r.dense.buckets[b].tokens, expected.buckets[b].tokens) << "bucket " << b;
      EXPECT_NEAR(r.dense.buckets[b].perplexity(), expected.buckets[b].perplexity(),
                  1e-4 * expected.buckets[b].perplexity())
          << "bucket " << o.buckets.label(static_cast<int64_t>(b)) << ", batch " << batch;
    }
    EXPECT_EQ(r.tokens, static_cast<int64_t>(docs[0].size() + docs[1].size() - 2));
  }
  // And the perplexity transformers' script computed itself, for the first document alone.
  const auto facts = nlohmann::json::parse(std::ifstream(test::eval_fixture("tiny.ref.json")));
  const TeacherForcedResult one = run_teacher_forced(*eval_model("tiny_base").transformer, {docs[0]}, {}, o);
  EXPECT_NEAR(one.dense.overall().perplexity(), facts["ppl.0"].get<double>(), 1e-4 * facts["ppl.0"].get<double>());
}

// Every policy keeps every key here. dense is computed exactly as the reference is (same
// steps, same kernel), so its KL is exactly 0. The budget policies step one token at a time
// while the reference steps 24: only fp32 summation order differs (logits within about 1e-5),
// which leaves KL below 1e-9 nats and every argmax in place.
TEST(TeacherForced, PoliciesThatKeepEverythingEqualDense) {
  const std::vector<Document> docs = text_documents(70, 3);
  const std::vector<PolicyUnderTest> policies = {{"dense", "dense", {}}, dms_policy(0.0, 8), keep_all("streaming"),
                                                 keep_all("h2o"), keep_all("tova")};
  const TeacherForcedResult r = run_teacher_forced(*eval_model("tiny").transformer, docs, policies, small_options());
  const QualityTotals dense = r.dense.overall();
  EXPECT_EQ(dense.tokens, 3 * 69);
  for (const auto& p : r.policies) {
    const QualityTotals q = p.quality.overall();
    EXPECT_EQ(q.tokens, dense.tokens) << p.label;
    if (p.policy == "dense" || p.policy == "dms") {
      EXPECT_EQ(q.kl_sum, 0.0) << p.label;
      EXPECT_EQ(q.nll_sum, dense.nll_sum) << p.label;
    } else {
      EXPECT_LT(q.mean_kl(), 1e-9) << p.label;
      EXPECT_NEAR(q.perplexity(), dense.perplexity(), 1e-5 * dense.perplexity()) << p.label;
    }
    EXPECT_EQ(q.top1_agree, q.tokens) << p.label;
    EXPECT_EQ(p.compression.sequences.size(), docs.size()) << p.label;
    EXPECT_EQ(p.compression.compression_ratio(), 1.0) << p.label;
    EXPECT_EQ(p.compression.eviction_fraction(), 0.0) << p.label;
  }
}

// DMS visibility does not depend on how the tokens are split into steps: one token per step
// and 24 per step give the same decisions (compression per head) and the same distributions up
// to fp32 summation order.
TEST(TeacherForced, DmsIsExactInChunks) {
  const std::vector<Document> docs = text_documents(90, 2);
  const Transformer& model = *eval_model("tiny").transformer;
  const int64_t window = eval_model("tiny").info.config.dms.window;
  TeacherForcedOptions stepwise = small_options();
  stepwise.chunk = 1;
  const PolicyUnderTest own{"dms", "dms", {.dms = {window, -1, 0}}};
  const TeacherForcedResult a = run_teacher_forced(model, docs, {own}, small_options());
  const TeacherForcedResult b = run_teacher_forced(model, docs, {own}, stepwise);
  const QualityTotals qa = a.policies[0].quality.overall(), qb = b.policies[0].quality.overall();
  EXPECT_GT(qa.mean_kl(), 1e-3) << "the decision heads should evict enough to change the distributions";
  EXPECT_GT(a.policies[0].compression.compression_ratio(), 1.5);
  EXPECT_NEAR(qa.kl_sum, qb.kl_sum, 1e-4 * qa.kl_sum);
  EXPECT_NEAR(qa.nll_sum, qb.nll_sum, 1e-5 * qa.nll_sum);
  EXPECT_EQ(qa.top1_agree, qb.top1_agree);
  EXPECT_EQ(a.policies[0].compression.ratio_per_head(), b.policies[0].compression.ratio_per_head());
  EXPECT_EQ(a.policies[0].compression.eviction_per_head(), b.policies[0].compression.eviction_per_head());
}

// A budget of ratio R with a floor of m keys leaves every head of a sequence that saw s tokens
// with min(s, max(ceil(s / R), m)) keys, and evicted the rest.
TEST(TeacherForced, BudgetCompressionPerHeadIsTheBudget) {
  const std::vector<Document> docs = text_documents(75, 3);
  const ModelConfig& c = eval_model("tiny").info.config;
  for (const std::string policy : {"streaming", "h2o", "tova"}) {
    PolicyUnderTest p{policy, policy, {}};
    p.options.budget = Budget{3.0, 0, 8};
    const TeacherForcedResult r = run_teacher_forced(*eval_model("tiny").transformer, docs, {p}, small_options());
    const CompressionStats& cs = r.policies[0].compression;
    ASSERT_EQ(cs.sequences.size(), docs.size());
    for (const auto& s : cs.sequences) {
      EXPECT_EQ(s.seen, 74);
      const double keep = std::min<double>(74, std::max<double>(8, std::ceil(74 / 3.0)));
      ASSERT_EQ(s.ratio_per_head.size(), static_cast<size_t>(c.n_layers * c.n_kv_heads));
      for (size_t h = 0; h < s.ratio_per_head.size(); ++h) {
        EXPECT_DOUBLE_EQ(s.ratio_per_head[h], 74 / keep) << policy << " head " << h;
        EXPECT_DOUBLE_EQ(s.eviction_per_head[h], (74 - keep) / 74) << policy << " head " << h;
      }
    }
    EXPECT_EQ(cs.ratio_per_layer().size(), static_cast<size_t>(c.n_layers));
  }
}

// Through the engine: dense twice gives the same tokens, and a policy that keeps every key
// gives dense's tokens.
TEST(GreedyRuns, KeepingEverythingContinuesLikeDense) {
  const Model& model = eval_model("tiny");
  const std::vector<Document> docs = text_documents(40, 3);
  const EngineSettings settings{at::kFloat, kDefaultBlockSize, 16, 64};
  const GreedyRun dense = run_greedy(model, {"dense", "dense", {}}, docs, 12, settings);
  const GreedyRun again = run_greedy(model, {"dense", "dense", {}}, docs, 12, settings);
  const GreedyRun h2o = run_greedy(model, keep_all("h2o"), docs, 12, settings);
  ASSERT_EQ(dense.tokens.size(), docs.size());
  for (size_t i = 0; i < docs.size(); ++i) {
    EXPECT_EQ(dense.tokens[i].size(), 12u);
    EXPECT_EQ(again.tokens[i], dense.tokens[i]);
    EXPECT_EQ(h2o.tokens[i], dense.tokens[i]);
    EXPECT_EQ(h2o.compression.sequences[i].compression_ratio, 1.0);
    EXPECT_EQ(h2o.compression.sequences[i].seen, 40 + 11);
  }
}

}  // namespace
}  // namespace dms::eval
