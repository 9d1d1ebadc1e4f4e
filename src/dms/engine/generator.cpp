#include "dms/engine/generator.h"

#include <algorithm>
#include <chrono>

#include "dms/engine/stop_strings.h"
#include "dms/util/error.h"

namespace dms {
namespace {

// Bounds the [T, S] score matrix a prefill step builds.
constexpr int64_t kPrefillChunk = 512;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Session::Session(const Model& model, at::ScalarType kv_dtype) : model_(model), cache_(model.info.config, kv_dtype) {}

void Session::reset() {
  cache_.clear();
  tokens_.clear();
}

at::Tensor Session::run(const std::vector<int32_t>& tokens) {
  const int64_t T = static_cast<int64_t>(tokens.size());
  const int64_t start = static_cast<int64_t>(tokens_.size());
  auto ids = at::tensor(std::vector<int64_t>(tokens.begin(), tokens.end()), at::kLong);
  auto positions = at::arange(start, start + T, at::kLong);
  cache_.begin_step(T);
  auto hidden = model_.transformer->forward(ids, positions, cache_);
  cache_.end_step();
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  return model_.transformer->logits(hidden.narrow(0, T - 1, 1)).squeeze(0);
}

at::Tensor Session::extend_to(const std::vector<int32_t>& tokens, int64_t* prefilled) {
  if (tokens.empty()) fail("prompt", "is empty (no tokens to condition on)");
  // The last token is always run again: its logits are the result.
  const size_t limit = std::min(tokens_.size(), tokens.size() - 1);
  const size_t keep = std::mismatch(tokens_.begin(), tokens_.begin() + limit, tokens.begin()).first - tokens_.begin();
  cache_.truncate(static_cast<int64_t>(keep));
  tokens_.resize(keep);
  if (prefilled) *prefilled = static_cast<int64_t>(tokens.size() - keep);
  at::Tensor logits;
  for (size_t i = keep; i < tokens.size(); i += kPrefillChunk) {
    const size_t end = std::min(tokens.size(), i + kPrefillChunk);
    logits = run(std::vector<int32_t>(tokens.begin() + i, tokens.begin() + end));
  }
  return logits;
}

at::Tensor Session::step(int32_t token) { return run({token}); }

GenerationResult generate(Session& session, const std::vector<int32_t>& prompt, const GenerationParams& params,
                          const std::function<void(const std::string&)>& on_text) {
  const Model& model = session.model();
  const int64_t context = model.info.config.max_position;
  if (static_cast<int64_t>(prompt.size()) >= context)
    fail("prompt", std::to_string(prompt.size()) + " tokens do not fit the model's context length of " +
                       std::to_string(context));
  GenerationResult r;
  Sampler sampler(params.sampling);
  StopStringMatcher stops(params.stop_strings);
  StreamDecoder decoder(*model.tokenizer);
  auto emit = [&](const std::string& text) {
    if (text.empty()) return;
    r.text += text;
    if (on_text) on_text(text);
  };

  auto t0 = std::chrono::steady_clock::now();
  at::Tensor logits = session.extend_to(prompt, &r.prompt_tokens);
  r.prompt_seconds = seconds_since(t0);

  t0 = std::chrono::steady_clock::now();
  r.stop_reason = "max tokens";
  for (int64_t i = 0; i < params.max_tokens; ++i) {
    const int32_t id = sampler.sample(logits);
    r.tokens.push_back(id);
    if (std::find(params.stop_ids.begin(), params.stop_ids.end(), id) != params.stop_ids.end()) {
      r.stop_reason = "stop token";
      break;
    }
    emit(stops.push(decoder.push(id)));
    if (stops.stopped()) {
      r.stop_reason = "stop string";
      break;
    }
    if (i + 1 == params.max_tokens) break;
    if (static_cast<int64_t>(session.tokens().size()) >= context) {
      r.stop_reason = "context length";
      break;
    }
    logits = session.step(id);
  }
  if (!stops.stopped()) emit(stops.push(decoder.finish()) + stops.flush());
  r.generation_seconds = seconds_since(t0);
  return r;
}

}  // namespace dms
