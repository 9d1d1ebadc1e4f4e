// Single-sequence generation over the dense KV cache: prefill, then one token per step until
// a stop token, a stop string, the token limit or the model's context length.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <vector>

#include "dms/engine/dense_cache.h"
#include "dms/engine/sampler.h"
#include "dms/model/loader.h"

namespace dms {

// A sequence's tokens and the KV cache that holds them.
class Session {
 public:
  Session(const Model& model, at::ScalarType kv_dtype);
  // Makes the cache hold exactly `tokens`, keeping the longest cached prefix they share with
  // the current history, and returns the logits [V] after the last token. Prefills in chunks;
  // `prefilled` (optional) receives the number of tokens that were run.
  at::Tensor extend_to(const std::vector<int32_t>& tokens, int64_t* prefilled = nullptr);
  // Appends one token and returns the logits after it.
  at::Tensor step(int32_t token);
  void reset();
  const std::vector<int32_t>& tokens() const { return tokens_; }
  const Model& model() const { return model_; }
  int64_t kv_bytes_held() const { return cache_.bytes_held(); }

 private:
  at::Tensor run(const std::vector<int32_t>& tokens);

  const Model& model_;
  DenseKVCache cache_;
  std::vector<int32_t> tokens_;
};

struct GenerationParams {
  int64_t max_tokens = 256;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;          // e.g. the checkpoint's EOS ids
  std::vector<std::string> stop_strings;  // matched on the decoded text
};

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated ids, stop token included
  std::string text;             // decoded, special tokens and the stop string removed
  std::string stop_reason;      // "stop token", "stop string", "max tokens", "context length"
  int64_t prompt_tokens = 0;    // tokens actually prefilled (not reused from the cache)
  double prompt_seconds = 0;
  double generation_seconds = 0;
};

// Generates a continuation of `prompt` (the whole token history; a cached prefix is reused).
// `on_text` receives the text as it becomes final, for streaming.
GenerationResult generate(Session& session, const std::vector<int32_t>& prompt, const GenerationParams& params,
                          const std::function<void(const std::string&)>& on_text = {});

}  // namespace dms
