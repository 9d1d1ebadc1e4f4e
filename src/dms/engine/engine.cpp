#include "dms/engine/engine.h"

#include <algorithm>

#include "dms/util/error.h"

namespace dms {

struct Engine::Request {
  int64_t id = 0;
  std::vector<int32_t> tokens;  // the whole history: prompt and sampled tokens
  int64_t fed = 0;              // tokens of `tokens` already in the cache
  SequenceId seq = -1;          // the cache's sequence, -1 when it holds none
  GenerationParams params;
  TextCallback on_text;
  Sampler sampler;
  StopStringMatcher stops;
  StreamDecoder decoder;
  GenerationResult result;
  bool started = false;
  Clock::time_point start_time, first_token_time;

  Request(int64_t id, std::vector<int32_t> prompt, GenerationParams p, TextCallback cb, const Tokenizer& tok)
      : id(id), tokens(std::move(prompt)), params(std::move(p)), on_text(std::move(cb)), sampler(params.sampling),
        stops(params.stop_strings), decoder(tok) {}
  int64_t pending() const { return static_cast<int64_t>(tokens.size()) - fed; }
};

namespace {

double seconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

Engine::Engine(const Model& model, PagedKVCache& cache, EngineOptions options)
    : model_(model), cache_(cache), options_(options) {
  if (options_.max_step_tokens < 1) fail("engine", "max_step_tokens must be at least 1");
  if (options_.max_running < 1) fail("engine", "max_running must be at least 1");
}

Engine::~Engine() = default;

Engine::Request& Engine::get(int64_t id) const {
  if (id < 0 || id >= static_cast<int64_t>(requests_.size())) fail("engine", "no request " + std::to_string(id));
  return *requests_[static_cast<size_t>(id)];
}

int64_t Engine::submit(std::vector<int32_t> prompt, GenerationParams params, TextCallback on_text,
                       int64_t continue_from) {
  if (prompt.empty()) fail("prompt", "is empty (no tokens to condition on)");
  if (params.max_tokens < 1) fail("max_tokens", "must be at least 1");
  const int64_t context = model_.info.config.max_position;
  if (static_cast<int64_t>(prompt.size()) >= context)
    fail("prompt", std::to_string(prompt.size()) + " tokens do not fit the model's context length of " +
                       std::to_string(context));
  const int64_t id = static_cast<int64_t>(requests_.size());
  requests_.push_back(std::make_unique<Request>(id, std::move(prompt), std::move(params), std::move(on_text),
                                                *model_.tokenizer));
  Request& r = *requests_.back();
  if (continue_from >= 0) {
    Request& old = get(continue_from);
    if (!old.result.finished) fail("engine", "request " + std::to_string(continue_from) + " has not finished");
    if (old.seq >= 0) {
      const bool prefix = old.fed < static_cast<int64_t>(r.tokens.size()) &&
                          std::equal(old.tokens.begin(), old.tokens.begin() + old.fed, r.tokens.begin());
      if (prefix) {
        r.seq = old.seq;
        r.fed = old.fed;
      } else {
        cache_.remove_sequence(old.seq);
      }
      old.seq = -1;
    }
  }
  r.result.prompt_tokens = r.pending();
  (r.seq >= 0 ? running_ : waiting_).push_back(&r);
  return id;
}

bool Engine::idle() const { return waiting_.empty() && running_.empty(); }

void Engine::run() {
  while (!idle()) step();
}

const GenerationResult& Engine::result(int64_t request) const { return get(request).result; }

void Engine::release(int64_t request) {
  Request& r = get(request);
  if (!r.result.finished) fail("engine", "request " + std::to_string(request) + " has not finished");
  if (r.seq >= 0) cache_.remove_sequence(r.seq);
  r.seq = -1;
}

void Engine::preempt(Request& r) {
  // Recomputation: the sequence gives its blocks back and is prefilled again, generated tokens
  // included, when there is room. Eviction decisions are deterministic, so it ends up the same.
  cache_.remove_sequence(r.seq);
  r.seq = -1;
  r.fed = 0;
  running_.erase(std::find(running_.begin(), running_.end(), &r));
  waiting_.insert(waiting_.begin(), &r);
  ++stats_.preemptions;
}

// Decoding sequences first (one token each), then prefill chunks, in admission order, within
// the token budget; then, while the pools cannot hold the step, the most recently admitted
// sequence gives way.
std::vector<Engine::Request*> Engine::schedule(std::vector<StepSequence>& step, std::vector<int32_t>& ids) {
  while (!waiting_.empty() && static_cast<int64_t>(running_.size()) < options_.max_running) {
    Request* r = waiting_.front();
    waiting_.erase(waiting_.begin());
    r->seq = cache_.add_sequence();
    running_.push_back(r);
  }
  std::vector<std::pair<Request*, int64_t>> chosen;
  int64_t budget = options_.max_step_tokens;
  for (bool decoding : {true, false})
    for (Request* r : running_) {
      if ((r->pending() == 1) != decoding || budget == 0) continue;
      const int64_t n = std::min(r->pending(), budget);
      chosen.push_back({r, n});
      budget -= n;
    }
  auto as_step = [&] {
    step.clear();
    for (auto [r, n] : chosen) step.push_back({r->seq, n});
  };
  as_step();
  while (!chosen.empty() && cache_.blocks_short(step) > 0) {
    auto latest = std::max_element(chosen.begin(), chosen.end(), [&](const auto& a, const auto& b) {
      return std::find(running_.begin(), running_.end(), a.first) < std::find(running_.begin(), running_.end(), b.first);
    });
    Request* r = latest->first;
    if (chosen.size() == 1) {
      // Alone and still too big: others that hold blocks make room, else it cannot go on.
      auto other = std::find_if(running_.rbegin(), running_.rend(), [&](Request* o) { return o != r; });
      if (other != running_.rend()) {
        preempt(**other);
      } else {
        chosen.clear();
        finish(*r, "kv cache full");
      }
    } else {
      chosen.erase(latest);
      if (r->pending() == 1) preempt(*r);  // a decoder that cannot step would only hold memory
    }
    as_step();
  }
  std::vector<Request*> scheduled;
  ids.clear();
  for (auto [r, n] : chosen) {
    scheduled.push_back(r);
    ids.insert(ids.end(), r->tokens.begin() + r->fed, r->tokens.begin() + r->fed + n);
  }
  return scheduled;
}

void Engine::step() {
  const auto t0 = Clock::now();
  std::vector<StepSequence> step;
  std::vector<int32_t> ids;
  std::vector<Request*> scheduled = schedule(step, ids);
  if (scheduled.empty()) return;
  for (Request* r : scheduled)
    if (!r->started) {
      r->started = true;
      r->start_time = t0;
    }

  cache_.begin_step(step);
  at::Tensor hidden;
  try {
    auto tokens = at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong);
    hidden = model_.transformer->forward(tokens, cache_.step_positions(), cache_);
    cache_.end_step();
  } catch (...) {
    cache_.abort_step();
    throw;
  }

  // Logits only for the rows that end a sequence's history: those sequences sample next.
  std::vector<int64_t> rows;
  std::vector<Request*> due;
  int64_t row = 0;
  for (size_t i = 0; i < scheduled.size(); ++i) {
    Request& r = *scheduled[i];
    r.fed += step[i].n_tokens;
    row += step[i].n_tokens;
    if (r.pending() == 0) {
      rows.push_back(row - 1);
      due.push_back(&r);
    }
  }
  stats_.tokens_run += static_cast<int64_t>(ids.size());
  if (!due.empty()) {
    auto logits = model_.transformer->logits(hidden.index_select(0, at::tensor(rows, at::kLong)));
    for (size_t i = 0; i < due.size(); ++i) sample(*due[i], logits[static_cast<int64_t>(i)]);
  }
  const CacheStats cs = cache_.stats();
  stats_.peak_bytes_held = std::max(stats_.peak_bytes_held, cs.bytes_held);
  stats_.peak_dense_bytes = std::max(stats_.peak_dense_bytes, cs.dense_bytes);
  ++stats_.steps;
  stats_.seconds += seconds_between(t0, Clock::now());
}

void Engine::sample(Request& r, const at::Tensor& logits) {
  const int32_t id = r.sampler.sample(logits);
  if (r.result.tokens.empty()) {
    r.first_token_time = Clock::now();
    r.result.prompt_seconds = seconds_between(r.start_time, r.first_token_time);
  }
  r.result.tokens.push_back(id);
  r.tokens.push_back(id);
  ++stats_.generated_tokens;
  const auto& stop_ids = r.params.stop_ids;
  if (std::find(stop_ids.begin(), stop_ids.end(), id) != stop_ids.end()) return finish(r, "stop token");
  const std::string text = r.stops.push(r.decoder.push(id));
  if (!text.empty()) {
    r.result.text += text;
    if (r.on_text) r.on_text(r.id, text);
  }
  if (r.stops.stopped()) return finish(r, "stop string");
  if (static_cast<int64_t>(r.result.tokens.size()) >= r.params.max_tokens) return finish(r, "max tokens");
  if (static_cast<int64_t>(r.tokens.size()) >= model_.info.config.max_position) return finish(r, "context length");
}

void Engine::finish(Request& r, const std::string& reason) {
  if (!r.stops.stopped()) {
    const std::string tail = r.stops.push(r.decoder.finish()) + r.stops.flush();
    if (!tail.empty()) {
      r.result.text += tail;
      if (r.on_text) r.on_text(r.id, tail);
    }
  }
  r.result.finished = true;
  r.result.stop_reason = reason;
  if (!r.result.tokens.empty()) r.result.generation_seconds = seconds_between(r.first_token_time, Clock::now());
  if (r.seq >= 0) {
    r.result.cache = cache_.sequence_stats(r.seq);
    if (r.params.record_kept) {
      r.result.kept_positions.clear();
      for (int64_t l = 0; l < cache_.n_layers(); ++l)
        for (int64_t g = 0; g < cache_.n_kv_heads(); ++g) r.result.kept_positions.push_back(cache_.live_positions(r.seq, l, g));
    }
  }
  running_.erase(std::remove(running_.begin(), running_.end(), &r), running_.end());
  if (!r.params.keep_cache && r.seq >= 0) {
    cache_.remove_sequence(r.seq);
    r.seq = -1;
  }
}

}  // namespace dms
