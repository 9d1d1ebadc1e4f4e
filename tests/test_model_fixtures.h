// Shared pieces of the model tests: finding the golden references that
// tests/reference/make_model_fixtures.py writes under $DMS_FIXTURES/models, loading the
// checkpoints they belong to, and running our forward the ways the tests compare.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dms/engine/dense_cache.h"
#include "dms/format/safetensors.h"
#include "dms/kernels/cpu/quant_matmul.h"
#include "dms/model/transformer.h"

namespace dms::test {

// The tiny random-weight checkpoints, by the names the generator gives them.
inline const std::vector<std::string> kTinyModels = {"llama_gqa", "llama_tied_bias", "qwen2", "qwen3"};
// Each has reference logits for prompts of 1, 7, 33 and 300 tokens (prompt.I, logits.I).
constexpr int kTinyPrompts = 4;

// $DMS_FIXTURES/models/<rel>; throws Error saying how to make the fixtures when it is missing.
std::string fixture_path(const std::string& rel);

// A golden-reference safetensors file (F32 and I64 tensors).
class Reference {
 public:
  explicit Reference(const std::string& rel);
  at::Tensor tensor(const std::string& name) const;  // a copy; throws Error naming a missing tensor
  std::vector<int64_t> ids(const std::string& name) const;

 private:
  std::shared_ptr<SafetensorsFile> file_;
};

nlohmann::json read_json(const std::string& rel);

// Sets quant_matmul's decode-path activations for a scope and restores the previous setting.
class ActivationsFor {
 public:
  explicit ActivationsFor(cpu::Activations a) : saved_(cpu::default_activations()) { cpu::set_default_activations(a); }
  ~ActivationsFor() { cpu::set_default_activations(saved_); }
  ActivationsFor(const ActivationsFor&) = delete;
  ActivationsFor& operator=(const ActivationsFor&) = delete;

 private:
  cpu::Activations saved_;
};

Transformer load_hf_model(const std::string& dir, at::ScalarType dtype);

// Runs `tokens` as one step over `cache` (positions continue after what it holds); fp32 logits [T, V].
at::Tensor run_step(const Transformer& model, DenseKVCache& cache, const std::vector<int64_t>& tokens);
// The prompt as a single prefill, all logits.
at::Tensor prompt_logits(const Transformer& model, const std::vector<int64_t>& tokens);
// `n` greedy tokens after `prompt`, decoded one at a time over the dense cache.
std::vector<int64_t> greedy(const Transformer& model, const std::vector<int64_t>& prompt, int64_t n);

// max |ours - ref| must not exceed rel * max(1, max |ref|) + extra; `what` names the comparison.
void expect_logits_near(const at::Tensor& ours, const at::Tensor& ref, double rel, const std::string& what,
                        double extra = 0);
double logit_bound(const at::Tensor& ref, double rel);

// Greedy tokens against the reference's, step by step until the first step whose reference
// top-1 minus top-2 gap is below `tie_gap`: from there a rounding-level difference in the
// logits may legitimately pick the other token, so the rest is not compared (and it says so).
void expect_same_greedy(const std::vector<int64_t>& ours, const std::vector<int64_t>& ref, const at::Tensor& ref_gap,
                        double tie_gap, const std::string& what);

}  // namespace dms::test
