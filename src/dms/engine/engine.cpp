#include "dms/engine/engine.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>

#include "dms/kernels/cpu/parallel.h"
#include "dms/util/error.h"

namespace dms {

struct Engine::Request {
  int64_t id = 0;
  std::vector<int32_t> tokens;  // the whole history: prompt and sampled tokens
  int64_t fed = 0;              // tokens of `tokens` already in the cache
  int64_t prompt_length = 0;    // tokens.size() when submitted
  int64_t stamp = 0;            // admission order, for the prefix cache's LRU
  SequenceId seq = -1;          // the cache's sequence, -1 when it holds none
  GenerationParams params;
  TextCallback on_text;
  Sampler sampler;
  StopStringMatcher stops;
  StreamDecoder decoder;
  GenerationResult result;
  bool started = false;
  Clock::time_point start_time, first_token_time;
  // submit_samples: the other samples, waiting for this request's prefill to end.
  std::vector<Request*> samples;
  Request* leader = nullptr;  // while this sample waits for that prefill

  Request(int64_t id, std::vector<int32_t> prompt, GenerationParams p, TextCallback cb, const Tokenizer& tok)
      : id(id),
        tokens(std::move(prompt)),
        prompt_length(static_cast<int64_t>(tokens.size())),
        params(std::move(p)),
        on_text(std::move(cb)),
        sampler(params.sampling),
        stops(params.stop_strings),
        decoder(tok) {}
  int64_t pending() const { return static_cast<int64_t>(tokens.size()) - fed; }
};

struct Engine::Prefix {
  std::vector<int32_t> tokens;  // the history its sequence holds
  uint64_t hash = 0;
  SequenceId seq = -1;
  at::Tensor logits;  // the next token's, where a prompt ended here
  int64_t last_used = 0;
};

namespace {

// FNV-1a over the token ids, one token at a time (prefixes hash incrementally).
constexpr uint64_t kHashSeed = 14695981039346656037ull;
uint64_t hash_step(uint64_t h, int32_t token) {
  const auto t = static_cast<uint32_t>(token);
  for (int i = 0; i < 4; ++i) h = (h ^ ((t >> (8 * i)) & 0xff)) * 1099511628211ull;
  return h;
}

double seconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The step's rows: decoding sequences first, then prefill chunks, each in admission order.
template <class Shares, class F>
void for_each_in_row_order(const Shares& shares, F&& f) {
  for (bool decoding : {true, false})
    for (const auto& s : shares)
      if ((s.request->pending() == 1) == decoding) f(s);
}

}  // namespace

Engine::Engine(const Model& model, PagedKVCache& cache, EngineOptions options)
    : model_(model), cache_(cache), options_(options) {
  if (options_.max_step_tokens < 1) fail("engine", "max_step_tokens must be at least 1");
  if (options_.max_running < 1) fail("engine", "max_running must be at least 1");
}

Engine::~Engine() { clear_prefix_cache(); }

Engine::Request& Engine::get(int64_t id) const {
  if (id < 0 || id >= static_cast<int64_t>(requests_.size())) fail("engine", "no request " + std::to_string(id));
  const auto& r = requests_[static_cast<size_t>(id)];
  if (!r) fail("engine", "request " + std::to_string(id) + " was released");
  return *r;
}

Engine::Request& Engine::add_request(std::vector<int32_t> prompt, GenerationParams params, TextCallback on_text) {
  if (prompt.empty()) fail("prompt", "is empty (no tokens to condition on)");
  if (params.max_tokens < 1) fail("max_tokens", "must be at least 1");
  const int64_t context = model_.info.config.max_position;
  if (static_cast<int64_t>(prompt.size()) >= context)
    fail("prompt", std::to_string(prompt.size()) + " tokens do not fit the model's context length of " +
                       std::to_string(context));
  const int64_t id = static_cast<int64_t>(requests_.size());
  requests_.push_back(std::make_unique<Request>(id, std::move(prompt), std::move(params), std::move(on_text),
                                                *model_.tokenizer));
  return *requests_.back();
}

std::vector<int64_t> Engine::submit_samples(const std::vector<int32_t>& prompt,
                                            const std::vector<GenerationParams>& params, TextCallback on_text) {
  if (params.empty()) fail("samples", "must be at least 1");
  for (const auto& p : params)  // what add_request checks besides the prompt, before any is added
    if (p.max_tokens < 1) fail("max_tokens", "must be at least 1");
  const size_t first = requests_.size();
  for (const auto& p : params) add_request(prompt, p, on_text);
  Request& leader = *requests_[first];
  std::vector<int64_t> ids{leader.id};
  for (size_t i = first + 1; i < requests_.size(); ++i) {
    Request& s = *requests_[i];
    s.leader = &leader;
    s.result.prompt_tokens = 0;  // prefilled by the leader
    leader.samples.push_back(&s);
    ids.push_back(s.id);
  }
  leader.result.prompt_tokens = leader.pending();
  waiting_.push_back(&leader);
  return ids;
}

int64_t Engine::submit(std::vector<int32_t> prompt, GenerationParams params, TextCallback on_text) {
  Request& r = add_request(std::move(prompt), std::move(params), std::move(on_text));
  r.result.prompt_tokens = r.pending();
  waiting_.push_back(&r);
  return r.id;
}

bool Engine::idle() const { return waiting_.empty() && running_.empty(); }

void Engine::run() {
  while (!idle()) step();
}

const GenerationResult& Engine::result(int64_t request) const { return get(request).result; }

SequenceId Engine::sequence(int64_t request) const { return get(request).seq; }

void Engine::release(int64_t request) {
  Request& r = get(request);
  if (!r.result.finished) fail("engine", "request " + std::to_string(request) + " has not finished");
  if (r.seq >= 0) cache_.remove_sequence(r.seq);
  requests_[static_cast<size_t>(request)].reset();
}

void Engine::abort(int64_t request) {
  Request& r = get(request);
  if (r.result.finished) return;
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), &r), waiting_.end());
  if (r.leader) {
    auto& s = r.leader->samples;
    s.erase(std::remove(s.begin(), s.end(), &r), s.end());
    r.leader = nullptr;
  }
  finish(r, "aborted");
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
  admit_waiting();
  std::vector<Share> shares;
  share_token_budget(shares);
  fit_in_memory(shares, step);
  std::vector<Request*> scheduled;
  ids.clear();
  for_each_in_row_order(shares, [&](const Share& s) {
    Request* r = s.request;
    scheduled.push_back(r);
    ids.insert(ids.end(), r->tokens.begin() + r->fed, r->tokens.begin() + r->fed + s.n);
  });
  return scheduled;
}

// In arrival order while the pools have room for each one's first chunk (prefix-cache entries
// make room first); the first always goes in when nothing runs (alone and still too big, it ends
// with "kv cache full"). A request that starts with a cached prefix forks it.
void Engine::admit_waiting() {
  while (!waiting_.empty()) {
    Request* r = waiting_.front();
    // A prompt's samples come in together (alone, however many they are).
    const int64_t group = 1 + static_cast<int64_t>(r->samples.size());
    if (!running_.empty() && static_cast<int64_t>(running_.size()) + group > options_.max_running) break;
    if (!r->stamp) r->stamp = ++prefix_clock_;
    Prefix* hit = options_.prefix_cache ? find_prefix(r->tokens, r->stamp) : nullptr;
    const int64_t reused = hit ? static_cast<int64_t>(hit->tokens.size()) : 0;
    if (!running_.empty() && !has_room_for(r->pending() - reused)) {
      if (drop_prefix()) continue;
      break;
    }
    waiting_.erase(waiting_.begin());
    r->seq = hit ? cache_.fork_sequence(hit->seq) : cache_.add_sequence();
    r->fed = reused;
    stats_.prefix_hit_tokens += reused;
    if (!r->started) {
      r->result.cached_tokens = reused;
      r->result.prompt_tokens = r->pending();
    }
    running_.push_back(r);
    if (r->pending() == 0) {  // a prompt seen before: its logits were kept
      const at::Tensor logits = hit->logits;
      r->started = true;
      r->start_time = Clock::now();
      if (!r->samples.empty()) fork_samples(*r, logits);
      sample(*r, logits);
    }
  }
}

// Admission follows the blocks the pools really have free, so a cache whose policy evicts admits
// more sequences than a dense one of the same size. Every pool must hold, besides the most the
// running sequences' next shares could take (a full prefill chunk's blocks, or one block per KV
// head for a decoder; those admitted this round included), the blocks of `r`'s first chunk.
// Later chunks are not reserved: when they do not fit, the engine preempts.
bool Engine::has_room_for(int64_t pending) const {
  const int64_t block = cache_.options().block_size, heads = cache_.n_kv_heads();
  const auto blocks_for = [&](int64_t tokens) {
    const int64_t chunk = std::min(tokens, options_.max_step_tokens);
    return heads * ((chunk + block - 1) / block);
  };
  int64_t reserved = 0;
  for (const Request* q : running_) reserved += blocks_for(q->pending());
  const int64_t need = blocks_for(pending);
  for (int64_t l = 0; l < cache_.n_layers(); ++l)
    if (cache_.pool(l).free_blocks() - reserved < need) return false;
  return true;
}

// In admission order, so the latest admitted is the last: one token for each decoding sequence
// while the budget lasts, then what is left for prefill chunks.
void Engine::share_token_budget(std::vector<Share>& shares) const {
  const int64_t decoding = std::count_if(running_.begin(), running_.end(), [](Request* r) { return r->pending() == 1; });
  int64_t decoders_left = std::min(decoding, options_.max_step_tokens);
  int64_t prefill_budget = options_.max_step_tokens - decoders_left;
  shares.clear();
  for (Request* r : running_) {
    if (r->pending() == 1) {
      if (decoders_left == 0) continue;
      --decoders_left;
      shares.push_back({r, 1});
    } else if (prefill_budget > 0) {
      int64_t n = std::min(r->pending(), prefill_budget);
      if (options_.prefix_cache)
        for (int64_t point : r->params.cache_points)
          if (point > r->fed && point < r->fed + n) {
            n = point - r->fed;
            break;
          }
      shares.push_back({r, n});
      prefill_budget -= n;
    }
  }
}

void Engine::fit_in_memory(std::vector<Share>& shares, std::vector<StepSequence>& step) {
  fill_step(shares, step);
  while (!shares.empty() && cache_.blocks_short(step) > 0) {
    if (!drop_prefix()) give_way(shares);
    fill_step(shares, step);
  }
}

// The latest admitted of the step leaves it; a decoder that cannot step would only hold
// memory, so it leaves the cache too. Alone and still too big: others that hold blocks make
// room, else it cannot go on.
void Engine::give_way(std::vector<Share>& shares) {
  Request& latest = *shares.back().request;
  if (shares.size() > 1) {
    shares.pop_back();
    if (latest.pending() == 1) preempt(latest);
    return;
  }
  auto other = std::find_if(running_.rbegin(), running_.rend(), [&](Request* o) { return o != &latest; });
  if (other != running_.rend()) {
    preempt(**other);
  } else {
    shares.clear();
    finish(latest, "kv cache full");
  }
}

void Engine::fill_step(const std::vector<Share>& shares, std::vector<StepSequence>& step) const {
  step.clear();
  for_each_in_row_order(shares, [&](const Share& s) { step.push_back({s.request->seq, s.n}); });
}

void Engine::step() {
  // No autograd in a step: its ops skip the autograd dispatch (version counters, view metadata).
  const c10::InferenceMode inference;
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

  // A decode-sized step (the matmuls' decode path, no BLAS attention) runs its parallel regions on
  // the kernels' thread team, a prefill chunk on OpenMP (kernels/cpu/parallel.h).
  int64_t longest = 0;
  for (const StepSequence& s : step) longest = std::max(longest, s.n_tokens);
  const cpu::TeamScope team(cpu::team_step(static_cast<int64_t>(ids.size()), longest));
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
  at::Tensor logits;
  if (!due.empty()) {  // rows are increasing: as many as the step has are all of them (every decode step)
    const bool all = static_cast<int64_t>(rows.size()) == hidden.size(0);
    const at::Tensor ends = all ? hidden : hidden.index_select(0, at::tensor(rows, at::kLong));
    logits = model_.transformer->logits(ends, &logits_kept_);
  }
  if (options_.prefix_cache)  // each prompt's state after this chunk, with its logits at its end
    for (Request* r : scheduled)
      if (r->fed <= r->prompt_length) {
        const auto d = std::find(due.begin(), due.end(), r);
        const at::Tensor last = d == due.end() ? at::Tensor() : logits[d - due.begin()].clone();
        keep_prefix(r->tokens, r->fed, r->seq, false, last, r->stamp);
      }
  if (!due.empty()) {
    for (size_t i = 0; i < due.size(); ++i) {
      if (!due[i]->samples.empty()) fork_samples(*due[i], logits[static_cast<int64_t>(i)]);
      sample(*due[i], logits[static_cast<int64_t>(i)]);
    }
  }
  const CacheFootprint cs = cache_.footprint();
  stats_.peak_bytes_held = std::max(stats_.peak_bytes_held, cs.bytes_held);
  stats_.peak_dense_bytes = std::max(stats_.peak_dense_bytes, cs.dense_bytes);
  stats_.peak_shared_bytes_saved = std::max(stats_.peak_shared_bytes_saved, cs.shared_bytes_saved);
  ++stats_.steps;
  stats_.seconds += seconds_between(t0, Clock::now());
}

void Engine::fork_samples(Request& leader, const at::Tensor& logits) {
  const std::vector<Request*> samples = std::move(leader.samples);
  leader.samples.clear();
  for (Request* s : samples) {
    s->leader = nullptr;
    s->seq = cache_.fork_sequence(leader.seq);
    s->fed = leader.fed;
    s->started = true;
    s->start_time = leader.start_time;
    running_.push_back(s);
  }
  for (Request* s : samples) sample(*s, logits);
}

void Engine::hand_over_samples(Request& leader) {
  if (leader.samples.empty()) return;
  Request& next = *leader.samples.front();
  next.samples.assign(leader.samples.begin() + 1, leader.samples.end());
  leader.samples.clear();
  next.leader = nullptr;
  for (Request* s : next.samples) s->leader = &next;
  next.result.prompt_tokens = next.pending();
  waiting_.insert(waiting_.begin(), &next);
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
  hand_over_samples(r);
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
  if (r.seq >= 0) {
    if (options_.prefix_cache && r.fed > 0)
      keep_prefix(r.tokens, r.fed, r.seq, true, {}, r.stamp);
    else
      cache_.remove_sequence(r.seq);
    r.seq = -1;
  }
}

Engine::Prefix* Engine::prefix_at(uint64_t h, const std::vector<int32_t>& tokens, size_t n) const {
  const auto [a, b] = prefix_index_.equal_range(h);
  for (auto it = a; it != b; ++it) {
    Prefix* p = it->second;
    if (p->tokens.size() == n && std::equal(p->tokens.begin(), p->tokens.end(), tokens.begin())) return p;
  }
  return nullptr;
}

Engine::Prefix* Engine::find_prefix(const std::vector<int32_t>& tokens, int64_t stamp) {
  Prefix* best = nullptr;
  uint64_t h = kHashSeed;
  for (size_t n = 1; n <= tokens.size() && !prefixes_.empty(); ++n) {
    h = hash_step(h, tokens[n - 1]);
    if (Prefix* p = prefix_at(h, tokens, n)) {
      p->last_used = std::max(p->last_used, stamp);
      if (n < tokens.size() || p->logits.defined()) best = p;
    }
  }
  return best;
}

void Engine::keep_prefix(const std::vector<int32_t>& tokens, int64_t n, SequenceId seq, bool owned,
                         at::Tensor logits, int64_t stamp) {
  uint64_t h = kHashSeed;
  for (int64_t i = 0; i < n; ++i) h = hash_step(h, tokens[static_cast<size_t>(i)]);
  if (Prefix* p = prefix_at(h, tokens, static_cast<size_t>(n))) {
    if (owned) cache_.remove_sequence(seq);
    p->last_used = std::max(p->last_used, stamp);
    if (!p->logits.defined()) p->logits = std::move(logits);
    return;
  }
  auto p = std::make_unique<Prefix>();
  p->tokens.assign(tokens.begin(), tokens.begin() + n);
  p->hash = h;
  p->seq = owned ? seq : cache_.fork_sequence(seq);
  p->logits = std::move(logits);
  p->last_used = stamp;
  prefix_index_.emplace(h, p.get());
  prefixes_.push_back(std::move(p));
}

bool Engine::drop_prefix() {
  if (prefixes_.empty()) return false;
  auto victim = std::min_element(prefixes_.begin(), prefixes_.end(), [](const auto& x, const auto& y) {
    return x->last_used != y->last_used ? x->last_used < y->last_used : x->tokens.size() > y->tokens.size();
  });
  Prefix* p = victim->get();
  const auto [a, b] = prefix_index_.equal_range(p->hash);
  for (auto it = a; it != b; ++it)
    if (it->second == p) {
      prefix_index_.erase(it);
      break;
    }
  cache_.remove_sequence(p->seq);
  prefixes_.erase(victim);
  ++stats_.prefix_evictions;
  return true;
}

int64_t Engine::prefix_blocks() const {
  std::vector<SequenceId> seqs;
  for (const auto& p : prefixes_) seqs.push_back(p->seq);
  return cache_.blocks_held_only_by(seqs);
}

void Engine::clear_prefix_cache() {
  for (const auto& p : prefixes_) cache_.remove_sequence(p->seq);
  prefixes_.clear();
  prefix_index_.clear();
}

}  // namespace dms
