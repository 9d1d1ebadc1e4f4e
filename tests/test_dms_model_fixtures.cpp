#include "test_dms_model_fixtures.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "dms/model/weights.h"
#include "dms/util/error.h"

namespace dms::test {

std::string dms_fixture(const std::string& rel) {
  const char* root = std::getenv("DMS_FIXTURES");
  const std::string how = "; generate them with tests/reference/make_dms_fixtures.py <dir> and export "
                          "DMS_FIXTURES=<dir> (scripts/test does both)";
  if (!root || !*root) fail("DMS_FIXTURES", "not set" + how);
  const auto path = std::filesystem::path(root) / "dms" / rel;
  if (!std::filesystem::exists(path)) fail(path.string(), "DMS fixture missing" + how);
  return path.string();
}

DmsReference::DmsReference(const std::string& name)
    : file_(SafetensorsFile::open(dms_fixture(name + ".ref.safetensors"))) {}

at::Tensor DmsReference::tensor(const std::string& key) const {
  auto it = file_->tensors().find(key);
  if (it == file_->tensors().end()) fail(file_->path(), "reference tensor '" + key + "' missing");
  const StTensor& t = it->second;
  at::ScalarType type;
  switch (t.dtype) {
    case StDtype::F32: type = at::kFloat; break;
    case StDtype::I64: type = at::kLong; break;
    default: fail(file_->path(), "reference tensor '" + key + "' is neither F32 nor I64");
  }
  at::Tensor out = at::empty(t.shape, type);
  std::memcpy(out.data_ptr(), t.data, t.nbytes);
  return out;
}

std::vector<int64_t> DmsReference::ids(const std::string& key) const {
  auto t = tensor(key);
  return {t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel()};
}

std::vector<int64_t> DmsReference::sequence() const {
  auto seq = ids("prompt");
  const auto generated = ids("tokens");
  seq.insert(seq.end(), generated.begin(), generated.end() - 1);
  return seq;
}

Transformer load_dms_model(const std::string& dir, const DmsLoadOptions& options, at::ScalarType dtype) {
  ModelConfig config = ModelConfig::from_hf_dir(dir);
  Weights weights = load_hf_weights(dir, config, dtype);
  apply_dms_options(options, dir, config, weights);
  return Transformer(std::move(config), std::move(weights));
}

at::Tensor DenseSequence::begin_step(int64_t T) {
  cache_.begin_step(T);
  return at::arange(cache_.length(), cache_.length() + T, at::kLong);
}

namespace {

// Room for every key of the longest reference sequence, even if none were evicted.
int64_t blocks_for_every_key(const ModelConfig& c, int64_t block_size) {
  constexpr int64_t kMaxTokens = 256;
  return c.n_kv_heads * ((kMaxTokens + block_size - 1) / block_size + 1);
}

}  // namespace

PagedSequence::PagedSequence(const Transformer& model, int64_t block_size)
    : cache_(model.config(),
             {.kv_dtype = model.dtype(), .block_size = block_size,
              .blocks_per_layer = blocks_for_every_key(model.config(), block_size)},
             model.config().dms.decides() ? make_dms_policy({.window = model.config().dms.window})
                                          : make_dense_policy()),
      id_(cache_.add_sequence()) {}

at::Tensor PagedSequence::begin_step(int64_t T) {
  cache_.begin_step({{id_, T}});
  return cache_.step_positions();
}

at::Tensor AttentionRecorder::attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const at::Tensor& evict_logits) {
  queries_.at(layer).push_back(q.to(at::kFloat).clone());
  if (evict_logits.defined()) {
    EXPECT_EQ(evict_logits.scalar_type(), at::kFloat);
    EXPECT_EQ(evict_logits.sizes(), (std::vector<int64_t>{q.size(0), k.size(1)}));
    logits_.at(layer).push_back(evict_logits.clone());
  } else {
    ++calls_without_logits_;
  }
  return next_->attend(layer, q, k, v, evict_logits);
}

at::Tensor AttentionRecorder::queries() const {
  std::vector<at::Tensor> per_layer;
  for (const auto& steps : queries_) per_layer.push_back(at::cat(steps));
  return at::stack(per_layer);
}

at::Tensor AttentionRecorder::logits() const {
  if (calls_without_logits_ > 0) return at::Tensor();
  std::vector<at::Tensor> per_layer;
  for (const auto& steps : logits_) per_layer.push_back(at::cat(steps));
  return at::stack(per_layer);
}

at::Tensor run_chunks(const Transformer& model, SequenceCache& cache, const std::vector<int64_t>& tokens,
                      const std::vector<int64_t>& chunks, AttentionRecorder* recorder) {
  std::vector<at::Tensor> logits;
  size_t done = 0;
  for (size_t c = 0; done < tokens.size(); ++c) {
    const auto T = std::min<int64_t>(chunks[std::min(c, chunks.size() - 1)], tokens.size() - done);
    auto ids = at::tensor(std::vector<int64_t>(tokens.begin() + done, tokens.begin() + done + T), at::kLong);
    auto positions = cache.begin_step(T);
    AttentionBackend* attn = &cache.backend();
    if (recorder) {
      recorder->route_to(cache.backend());
      attn = recorder;
    }
    logits.push_back(model.logits(model.forward(ids, positions, *attn)));
    cache.end_step();
    done += T;
  }
  return at::cat(logits);
}

std::vector<int64_t> greedy_tokens(const Transformer& model, SequenceCache& cache, const std::vector<int64_t>& prompt,
                                   int64_t n) {
  auto logits = run_chunks(model, cache, prompt, {static_cast<int64_t>(prompt.size())});
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) {
    out.push_back(logits[-1].argmax().item<int64_t>());
    if (i + 1 < n) logits = run_chunks(model, cache, {out.back()}, {1});
  }
  return out;
}

ScratchDir::ScratchDir() {
  static std::atomic<int> counter{0};
  path_ = std::filesystem::temp_directory_path() /
          ("dms_test_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace dms::test
