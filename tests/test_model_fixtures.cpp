#include "test_model_fixtures.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "dms/model/config.h"
#include "dms/model/weights.h"
#include "dms/util/error.h"

namespace dms::test {

std::string fixture_path(const std::string& rel) {
  const char* root = std::getenv("DMS_FIXTURES");
  const std::string how = "; generate them with tests/reference/make_model_fixtures.py <dir> and export "
                          "DMS_FIXTURES=<dir> (scripts/test does both)";
  if (!root || !*root) fail("DMS_FIXTURES", "not set" + how);
  const auto path = std::filesystem::path(root) / "models" / rel;
  if (!std::filesystem::exists(path)) fail(path.string(), "model fixture missing" + how);
  return path.string();
}

Reference::Reference(const std::string& rel) : file_(SafetensorsFile::open(fixture_path(rel))) {}

at::Tensor Reference::tensor(const std::string& name) const {
  auto it = file_->tensors().find(name);
  if (it == file_->tensors().end()) fail(file_->path(), "reference tensor '" + name + "' missing");
  const StTensor& t = it->second;
  at::ScalarType type;
  switch (t.dtype) {
    case StDtype::F32: type = at::kFloat; break;
    case StDtype::I64: type = at::kLong; break;
    default: fail(file_->path(), "reference tensor '" + name + "' is neither F32 nor I64");
  }
  return at::from_blob(const_cast<uint8_t*>(t.data), t.shape, at::TensorOptions().dtype(type)).clone();
}

std::vector<int64_t> Reference::ids(const std::string& name) const {
  auto t = tensor(name).contiguous();
  return {t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel()};
}

nlohmann::json read_json(const std::string& rel) {
  const std::string path = fixture_path(rel);
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

Transformer load_hf_model(const std::string& dir, at::ScalarType dtype) {
  ModelConfig config = ModelConfig::from_hf_dir(dir);
  Weights weights = load_hf_weights(dir, config, dtype);
  return Transformer(std::move(config), std::move(weights));
}

at::Tensor run_step(const Transformer& model, DenseKVCache& cache, const std::vector<int64_t>& tokens) {
  const auto T = static_cast<int64_t>(tokens.size());
  auto ids = at::tensor(tokens, at::kLong);
  auto positions = at::arange(cache.length(), cache.length() + T, at::kLong);
  cache.begin_step(T);
  auto hidden = model.forward(ids, positions, cache);
  cache.end_step();
  return model.logits(hidden);
}

at::Tensor prompt_logits(const Transformer& model, const std::vector<int64_t>& tokens) {
  DenseKVCache cache(model.config(), model.dtype());
  return run_step(model, cache, tokens);
}

std::vector<int64_t> greedy(const Transformer& model, const std::vector<int64_t>& prompt, int64_t n) {
  DenseKVCache cache(model.config(), model.dtype());
  auto logits = run_step(model, cache, prompt);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) {
    out.push_back(logits[-1].argmax().item<int64_t>());
    if (i + 1 < n) logits = run_step(model, cache, {out.back()});
  }
  return out;
}

double logit_bound(const at::Tensor& ref, double rel) {
  return rel * std::max(1.0, ref.abs().max().item<double>());
}

void expect_logits_near(const at::Tensor& ours, const at::Tensor& ref, double rel, const std::string& what,
                        double extra) {
  ASSERT_EQ(ours.sizes(), ref.sizes()) << what;
  const double diff = (ours.to(at::kFloat) - ref).abs().max().item<double>();
  EXPECT_LE(diff, logit_bound(ref, rel) + extra) << what << ": max |ours - transformers| = " << diff
                                         << ", max |logit| = " << ref.abs().max().item<double>();
}

void expect_same_greedy(const std::vector<int64_t>& ours, const std::vector<int64_t>& ref, const at::Tensor& ref_gap,
                        double tie_gap, const std::string& what) {
  ASSERT_EQ(ours.size(), ref.size()) << what;
  size_t compared = 0;
  for (; compared < ref.size(); ++compared) {
    if (ref_gap[compared].item<double>() < tie_gap) {
      std::cout << what << ": step " << compared << " is a near-tie in the reference (top-2 gap "
                << ref_gap[compared].item<double>() << " < " << tie_gap << "); compared the first " << compared
                << " tokens only\n";
      break;
    }
    EXPECT_EQ(ours[compared], ref[compared]) << what << ": first difference at step " << compared;
    if (ours[compared] != ref[compared]) return;
  }
}

}  // namespace dms::test
