// Shared pieces of the DMS model tests: the checkpoints and references that
// tests/reference/make_dms_fixtures.py writes under $DMS_FIXTURES/dms, a single-sequence driver
// for the attention backends, and a recorder of what the forward hands to attention.
#pragma once
#include <ATen/ATen.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "dms/cache/paged_kv_cache.h"
#include "dms/engine/dense_cache.h"
#include "dms/format/safetensors.h"
#include "dms/model/attention.h"
#include "dms/model/loader.h"
#include "dms/model/transformer.h"
#include "dms/util/error.h"

namespace dms::test {

// The DMS checkpoints with references, by the names the generator gives them.
inline const std::vector<std::string> kDmsModels = {"mode_a", "mode_b_head", "mode_b_layer"};
inline const std::vector<std::string> kAdapterModels = {"mode_b_head", "mode_b_layer"};

// $DMS_FIXTURES/dms/<rel>; throws Error saying how to make the fixtures when it is missing.
std::string dms_fixture(const std::string& rel);

// A reference safetensors file of F32 and I64 tensors.
class DmsReference {
 public:
  explicit DmsReference(const std::string& name);  // dms/<name>.ref.safetensors
  at::Tensor tensor(const std::string& key) const;  // a copy; throws Error naming a missing tensor
  std::vector<int64_t> ids(const std::string& key) const;
  // The teacher-forced sequence: the prompt and every generated token but the last.
  std::vector<int64_t> sequence() const;

 private:
  std::shared_ptr<SafetensorsFile> file_;
};

// Loads a checkpoint directory without its tokenizer (the tiny checkpoints have none).
Transformer load_dms_model(const std::string& dir, const DmsLoadOptions& options = {},
                           at::ScalarType dtype = at::kFloat);

// One sequence's cache, driven one step at a time.
class SequenceCache {
 public:
  virtual ~SequenceCache() = default;
  // Declares a step of T tokens and returns their positions [T].
  virtual at::Tensor begin_step(int64_t T) = 0;
  virtual AttentionBackend& backend() = 0;
  virtual void end_step() = 0;
};

class DenseSequence : public SequenceCache {
 public:
  explicit DenseSequence(const Transformer& model) : cache_(model.config(), model.dtype()) {}
  at::Tensor begin_step(int64_t T) override;
  AttentionBackend& backend() override { return cache_; }
  void end_step() override { cache_.end_step(); }

 private:
  DenseKVCache cache_;
};

// The engine's path: the paged cache, KV in the model's dtype, with the policy the engine runs the
// model with: DMS at the model's window when it hands attention decision logits, else dense.
class PagedSequence : public SequenceCache {
 public:
  explicit PagedSequence(const Transformer& model, int64_t block_size = kDefaultBlockSize);
  at::Tensor begin_step(int64_t T) override;
  AttentionBackend& backend() override { return cache_; }
  void end_step() override { cache_.end_step(); }
  const PagedKVCache& cache() const { return cache_; }
  SequenceId id() const { return id_; }

 private:
  PagedKVCache cache_;
  SequenceId id_;
};

// Passes every call through to another backend and keeps the q and evict_logits it saw.
class AttentionRecorder : public AttentionBackend {
 public:
  explicit AttentionRecorder(int64_t n_layers) : queries_(n_layers), logits_(n_layers) {}
  void route_to(AttentionBackend& next) { next_ = &next; }
  at::Tensor attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& evict_logits) override;
  // [L, N, n_heads, D] and [L, N, n_kv] over every step so far; logits() is undefined when a
  // call had none.
  at::Tensor queries() const;
  at::Tensor logits() const;
  int64_t calls_without_logits() const { return calls_without_logits_; }

 private:
  AttentionBackend* next_ = nullptr;
  std::vector<std::vector<at::Tensor>> queries_, logits_;  // per layer, per step
  int64_t calls_without_logits_ = 0;
};

// Runs `tokens` through the cache in steps of `chunks` tokens (the last chunk size repeats
// until the tokens are used up); returns the fp32 logits [N, V]. `recorder` (optional) sees
// every attention call.
at::Tensor run_chunks(const Transformer& model, SequenceCache& cache, const std::vector<int64_t>& tokens,
                      const std::vector<int64_t>& chunks, AttentionRecorder* recorder = nullptr);
// `n` greedy tokens after `prompt` (prefilled in one step), decoded one at a time.
std::vector<int64_t> greedy_tokens(const Transformer& model, SequenceCache& cache, const std::vector<int64_t>& prompt,
                                   int64_t n);

// A scratch directory under the system temp dir, removed with the object.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// The message of the dms::Error `f` throws; a test failure when it throws nothing.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error thrown)";
}

}  // namespace dms::test
