#include "dms/serve/engine_worker.h"

#include <cmath>
#include <cstdio>
#include <map>
#include <memory>

namespace dms::serve {

using Clock = std::chrono::steady_clock;

namespace {

double seconds_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

}  // namespace

struct EngineWorker::Active {
  GenerationJob job;
  int64_t request = -1;  // the engine's id
  size_t tokens = 0;     // generated tokens already counted
  Clock::time_point last_token;
  double ttft = 0;       // from arrival, queueing included
  std::string error;     // set when the engine failed under this sequence
};

EngineWorker::EngineWorker(const Model& model, PagedKVCache& cache, EngineOptions options, int64_t max_queue,
                           ServeMetrics& metrics)
    : engine_(model, cache, options), cache_(cache), max_running_(options.max_running), max_queue_(max_queue),
      metrics_(metrics) {
  publish_stats();
  thread_ = std::thread([this] { loop(); });
}

EngineWorker::~EngineWorker() { shutdown(std::chrono::milliseconds(0)); }

Generator::Admission EngineWorker::submit(std::vector<GenerationJob> jobs) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return Admission::ShuttingDown;
    // Places in the cache that are free now take jobs beyond the queue.
    const int64_t free_places = std::max<int64_t>(0, max_running_ - stats_.running);
    const int64_t queued = stats_.waiting + static_cast<int64_t>(incoming_.size() + jobs.size());
    if (queued > max_queue_ + free_places) return Admission::QueueFull;
    for (auto& job : jobs) incoming_.push_back(std::move(job));
  }
  wake_.notify_one();
  return Admission::Queued;
}

GeneratorStats EngineWorker::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  GeneratorStats s = stats_;
  s.waiting += static_cast<int64_t>(incoming_.size());
  return s;
}

void EngineWorker::shutdown(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto at = Clock::now() + grace;
    abort_at_ = stopping_ ? std::min(abort_at_, at) : at;
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void EngineWorker::loop() {
  std::vector<Active> active;
  while (true) {
    std::vector<GenerationJob> jobs;
    bool abort_all = false;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !incoming_.empty() || !active.empty(); });
      if (stopping_ && incoming_.empty() && active.empty()) break;
      jobs.swap(incoming_);
      abort_all = stopping_ && Clock::now() >= abort_at_;
    }
    try {
      start_jobs(jobs, active);
      for (Active& a : active)
        if (abort_all || a.job.channel->cancelled()) engine_.abort(a.request);
      step_engine(active);
      publish_stats();  // before collect tells the clients: a scrape after a response sees it
      collect(active);
    } catch (const std::exception& e) {
      // Not expected: the engine refused its own bookkeeping. Nothing it holds can go on.
      std::fprintf(stderr, "serve: engine error: %s; aborting %zu sequences\n", e.what(), active.size());
      for (Active& a : active) {
        metrics_.finished("error");
        a.job.channel->push({a.job.index, "", Finish{"error", e.what(), static_cast<int64_t>(a.tokens), 0}});
        try {
          engine_.abort(a.request);
          engine_.release(a.request);
        } catch (const std::exception&) {
        }
      }
      active.clear();
    }
  }
}

// The choices of one request (jobs in a row with one channel and one prompt) are samples of
// one prefill (Engine::submit_samples).
void EngineWorker::start_jobs(std::vector<GenerationJob>& jobs, std::vector<Active>& active) {
  for (size_t first = 0, end = 0; first < jobs.size(); first = end) {
    end = first + 1;
    while (end < jobs.size() && jobs[end].channel == jobs[first].channel && jobs[end].prompt == jobs[first].prompt)
      ++end;
    std::vector<GenerationParams> params;
    for (size_t i = first; i < end; ++i) {
      const GenerationJob& job = jobs[i];
      GenerationParams p;
      p.max_tokens = job.max_tokens;
      p.sampling = {.temperature = job.sampling.temperature,
                    .top_k = job.sampling.top_k,
                    .top_p = job.sampling.top_p,
                    .min_p = job.sampling.min_p,
                    .seed = job.sampling.seed.value_or(0)};
      p.stop_ids = job.stop_ids;
      p.stop_strings = job.stop_strings;
      p.cache_points = job.cache_points;
      params.push_back(std::move(p));
    }
    auto channel = jobs[first].channel;
    auto index_of = std::make_shared<std::map<int64_t, int64_t>>();  // engine request -> choice
    try {
      const std::vector<int64_t> ids =
          engine_.submit_samples(jobs[first].prompt, params, [channel, index_of](int64_t id, const std::string& text) {
            channel->push({index_of->at(id), text, std::nullopt});
          });
      for (size_t i = first; i < end; ++i) {
        (*index_of)[ids[i - first]] = jobs[i].index;
        Active a;
        a.job = std::move(jobs[i]);
        a.request = ids[i - first];
        active.push_back(std::move(a));
      }
    } catch (const std::exception& e) {
      for (size_t i = first; i < end; ++i) {
        metrics_.finished("error");
        jobs[i].channel->push({jobs[i].index, "", Finish{"error", e.what(), 0, 0}});
      }
    }
  }
}

void EngineWorker::step_engine(std::vector<Active>& active) {
  if (engine_.idle()) return;
  try {
    engine_.step();
  } catch (const std::exception& e) {
    // The cache rolled the step back; the sequences in it cannot go on, the server can.
    std::fprintf(stderr, "serve: step failed: %s\n", e.what());
    for (Active& a : active) {
      a.error = e.what();
      engine_.abort(a.request);
    }
  }
}

void EngineWorker::collect(std::vector<Active>& active) {
  const auto now = Clock::now();
  const int64_t heads = cache_.n_layers() * cache_.n_kv_heads();
  for (auto it = active.begin(); it != active.end();) {
    Active& a = *it;
    const GenerationResult& r = engine_.result(a.request);
    // A step gives a sequence one token, or two when its prompt was in the prefix cache (the
    // first is drawn from the kept logits at admission): those arrive together.
    int64_t generated = 0;
    for (; a.tokens < r.tokens.size(); ++a.tokens, ++generated) {
      if (a.tokens == 0) {
        a.ttft = seconds_between(a.job.arrived, now);
        metrics_.time_to_first_token(a.ttft);
      } else {
        metrics_.inter_token_latency(seconds_between(a.last_token, now));
      }
      a.last_token = now;
    }
    metrics_.generated(generated);
    if (!r.finished) {
      ++it;
      continue;
    }
    const Finish finish{a.error.empty() ? finish_reason(r.stop_reason) : "error", a.error,
                        static_cast<int64_t>(r.tokens.size()), r.cached_tokens};
    // Counted before the client hears of it, so a scrape right after the response adds up.
    metrics_.finished(finish.reason);
    metrics_.request_latency(seconds_between(a.job.arrived, now));
    metrics_.evicted(std::llround(r.cache.eviction_fraction * static_cast<double>(r.cache.tokens_seen * heads)));
    a.job.channel->push({a.job.index, "", finish});
    const double rate = r.generation_seconds > 0 ? static_cast<double>(r.tokens.size()) / r.generation_seconds : 0;
    std::fprintf(stderr,
                 "request %s: %lld prompt + %lld generated tokens, ttft %.3f s, %.1f tok/s, compression %.2f, %s\n",
                 a.job.id.c_str(), static_cast<long long>(a.job.prompt.size()),
                 static_cast<long long>(r.tokens.size()), a.ttft, rate, r.cache.compression_ratio,
                 a.error.empty() ? r.stop_reason.c_str() : ("error: " + a.error).c_str());
    engine_.release(a.request);
    it = active.erase(it);
  }
}

void EngineWorker::publish_stats() {
  const CacheStats cs = cache_.stats();
  int64_t total = 0;
  for (const PoolStats& p : cs.pools) total += p.blocks;
  // Counting walks every entry's block table: when the engine is idle, else once a second.
  int64_t prefix_blocks = -1;
  const auto now = Clock::now();
  if (engine_.idle() || now - prefix_blocks_at_ > std::chrono::seconds(1)) {
    prefix_blocks = engine_.prefix_blocks();
    prefix_blocks_at_ = now;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.running = engine_.running();
  stats_.waiting = engine_.waiting();
  stats_.kv_blocks_used = cs.blocks_used;
  stats_.kv_blocks_total = total;
  stats_.kv_bytes_held = cs.bytes_held;
  stats_.kv_dense_bytes = cs.dense_bytes;
  stats_.kv_shared_bytes_saved = cs.shared_bytes_saved;
  stats_.kv_bytes_held_peak = std::max(stats_.kv_bytes_held_peak, cs.bytes_held);
  stats_.preemptions = engine_.stats().preemptions;
  stats_.prefix_cache_hit_tokens = engine_.stats().prefix_hit_tokens;
  stats_.prefix_cache_entries = engine_.prefix_entries();
  if (prefix_blocks >= 0) stats_.prefix_cache_blocks = prefix_blocks;
}

}  // namespace dms::serve
