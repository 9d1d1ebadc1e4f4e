// The paged cache behind the real forward: with nothing evicted (dense policy, or DMS with a
// forced fraction of 0) the tiny random checkpoints reproduce transformers' logits whether a
// prompt runs alone in uneven chunks or shares its steps with another sequence, and bf16 KV
// stays within bf16 rounding of them. Same tolerances as test_model_forward.cpp: fp32 KV
// 1e-4 * max(1, max |logit|); bf16 KV 5e-2 (keys and values rounded to 8 mantissa bits).
#include <gtest/gtest.h>

#include "dms/cache/paged_kv_cache.h"
#include "test_model_fixtures.h"

namespace dms::test {
namespace {

constexpr double kFp32Rel = 1e-4;
constexpr double kBf16Rel = 5e-2;

// One step: each (sequence, tokens) pair in order; returns each pair's logits [n, V].
std::vector<at::Tensor> run_paged(const Transformer& model, PagedKVCache& cache,
                                  const std::vector<std::pair<SequenceId, std::vector<int64_t>>>& parts) {
  std::vector<StepSequence> step;
  std::vector<int64_t> tokens;
  for (const auto& [id, ids] : parts) {
    step.push_back({id, static_cast<int64_t>(ids.size())});
    tokens.insert(tokens.end(), ids.begin(), ids.end());
  }
  cache.begin_step(step);
  const at::Tensor hidden = model.forward(at::tensor(tokens, at::kLong), cache.step_positions(), cache);
  cache.end_step();
  const at::Tensor logits = model.logits(hidden);
  std::vector<at::Tensor> out;
  int64_t row = 0;
  for (const auto& s : step) {
    out.push_back(logits.narrow(0, row, s.n_tokens));
    row += s.n_tokens;
  }
  return out;
}

std::vector<int64_t> slice(const std::vector<int64_t>& v, size_t begin, size_t end) {
  return {v.begin() + static_cast<int64_t>(begin), v.begin() + static_cast<int64_t>(std::min(end, v.size()))};
}

class PagedTinyModel : public ::testing::TestWithParam<std::string> {};

TEST_P(PagedTinyModel, NoEvictionMatchesTransformersAloneAndBatched) {
  const Transformer model = load_hf_model(fixture_path(GetParam()), at::kFloat);
  const Reference ref(GetParam() + ".ref.safetensors");
  const auto long_prompt = ref.ids("prompt.3"), short_prompt = ref.ids("prompt.2");
  ASSERT_GT(long_prompt.size(), 100u);
  ASSERT_GT(short_prompt.size(), 20u);
  const PagedCacheOptions options{at::kFloat, 16, 512};
  for (const char* policy : {"dense", "dms"}) {
    SCOPED_TRACE(policy);
    PolicyOptions po;
    po.dms.forced_fraction = 0;  // the tiny checkpoints have no decision heads
    PagedKVCache cache(model.config(), options, make_policy(policy, po));

    // Alone, in uneven chunks and then one token at a time.
    const SequenceId a = cache.add_sequence();
    std::vector<at::Tensor> pieces;
    size_t done = 0;
    for (size_t n : {13, 64, 1, 90}) {
      pieces.push_back(run_paged(model, cache, {{a, slice(long_prompt, done, done + n)}})[0]);
      done += n;
    }
    for (; done < long_prompt.size(); ++done) pieces.push_back(run_paged(model, cache, {{a, {long_prompt[done]}}})[0]);
    expect_logits_near(at::cat(pieces), ref.tensor("logits.3"), kFp32Rel, GetParam() + " alone");

    // Two sequences sharing every step: one prefilling while the other decodes, then both decoding.
    const SequenceId b = cache.add_sequence(), c = cache.add_sequence();
    std::vector<at::Tensor> bl, cl;
    size_t bd = 0, cd = 0;
    while (bd < long_prompt.size() || cd < short_prompt.size()) {
      std::vector<std::pair<SequenceId, std::vector<int64_t>>> parts;
      const size_t bn = bd < 40 ? 20 : 1, cn = 1;
      if (bd < long_prompt.size()) parts.push_back({b, slice(long_prompt, bd, bd + bn)});
      if (cd < short_prompt.size()) parts.push_back({c, slice(short_prompt, cd, cd + cn)});
      const auto out = run_paged(model, cache, parts);
      size_t i = 0;
      if (bd < long_prompt.size()) bl.push_back(out[i++]), bd += parts[0].second.size();
      if (cd < short_prompt.size()) cl.push_back(out[i]), cd += cn;
    }
    expect_logits_near(at::cat(bl), ref.tensor("logits.3"), kFp32Rel, GetParam() + " batched, long prompt");
    expect_logits_near(at::cat(cl), ref.tensor("logits.2"), kFp32Rel, GetParam() + " batched, short prompt");
    for (SequenceId id : {a, b, c}) cache.remove_sequence(id);
    EXPECT_EQ(cache.stats().blocks_used, 0);
  }
}

// The prefix cache's path: a prompt's state forked after a chunk (two forks, as two requests
// that share its start) goes on from there to transformers' logits of the whole prompt, and the
// parent it shares blocks with stays as it was.
TEST_P(PagedTinyModel, AForkedPrefixGoesOnToTransformersLogits) {
  const Transformer model = load_hf_model(fixture_path(GetParam()), at::kFloat);
  const Reference ref(GetParam() + ".ref.safetensors");
  const auto prompt = ref.ids("prompt.3");
  const at::Tensor expected = ref.tensor("logits.3");
  const size_t k = 77;  // not a block boundary: the forks copy the last block before writing
  ASSERT_GT(prompt.size(), k + 20);
  for (const char* policy : {"dense", "dms"}) {
    SCOPED_TRACE(policy);
    PolicyOptions po;
    po.dms.forced_fraction = 0;  // the tiny checkpoints have no decision heads
    PagedKVCache cache(model.config(), {at::kFloat, 16, 512}, make_policy(policy, po));
    const SequenceId parent = cache.add_sequence();
    const at::Tensor head = run_paged(model, cache, {{parent, slice(prompt, 0, k)}})[0];
    const SequenceId a = cache.fork_sequence(parent), b = cache.fork_sequence(parent);
    const at::Tensor a_rest = run_paged(model, cache, {{a, slice(prompt, k, prompt.size())}})[0];
    // b one token at a time, its first beside the parent's own next token; then the parent goes
    // and the forks hold its blocks on their own.
    const auto first = run_paged(model, cache, {{b, {prompt[k]}}, {parent, {prompt[k]}}});
    expect_logits_near(first[1], expected.narrow(0, static_cast<int64_t>(k), 1), kFp32Rel, GetParam() + " parent");
    cache.remove_sequence(parent);
    std::vector<at::Tensor> b_rest{first[0]};
    for (size_t t = k + 1; t < prompt.size(); ++t) b_rest.push_back(run_paged(model, cache, {{b, {prompt[t]}}})[0]);
    const int64_t rest = static_cast<int64_t>(prompt.size() - k);
    expect_logits_near(head, expected.narrow(0, 0, static_cast<int64_t>(k)), kFp32Rel, GetParam() + " prefix");
    expect_logits_near(a_rest, expected.narrow(0, static_cast<int64_t>(k), rest), kFp32Rel, GetParam() + " fork a");
    expect_logits_near(at::cat(b_rest), expected.narrow(0, static_cast<int64_t>(k), rest), kFp32Rel,
                       GetParam() + " fork b");
    for (SequenceId id : {a, b}) cache.remove_sequence(id);
    EXPECT_EQ(cache.stats().blocks_used, 0);
  }
}

TEST_P(PagedTinyModel, Bf16KeysStayWithinRounding) {
  const Transformer model = load_hf_model(fixture_path(GetParam()), at::kFloat);
  const Reference ref(GetParam() + ".ref.safetensors");
  const auto prompt = ref.ids("prompt.3");
  PagedKVCache cache(model.config(), {at::kBFloat16, 16, 512}, make_dense_policy());
  const SequenceId id = cache.add_sequence();
  std::vector<at::Tensor> pieces{run_paged(model, cache, {{id, slice(prompt, 0, 200)}})[0]};
  for (size_t t = 200; t < prompt.size(); ++t) pieces.push_back(run_paged(model, cache, {{id, {prompt[t]}}})[0]);
  expect_logits_near(at::cat(pieces), ref.tensor("logits.3"), kBf16Rel, GetParam() + " bf16 KV");
}

INSTANTIATE_TEST_SUITE_P(Tiny, PagedTinyModel, ::testing::ValuesIn(kTinyModels));

}  // namespace
}  // namespace dms::test
