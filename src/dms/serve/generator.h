// The hand-over between the HTTP threads and the thread that owns the engine: a request becomes
// one GenerationJob per choice; what the engine produces comes back through the request's
// ResponseChannel. The HTTP layer sees only the Generator interface, so it runs (and is tested)
// without a model.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "dms/serve/protocol.h"

namespace dms::serve {

struct Finish {
  std::string reason;  // OpenAI's finish_reason: stop, length, abort, error
  std::string error;   // with reason "error": what went wrong
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens the prefix cache held
};

// A piece of choice `index`'s text, or (with `finish`) its end.
struct StreamEvent {
  int64_t index = 0;
  std::string text;
  std::optional<Finish> finish;
};

// Events of one request, from the engine thread to the HTTP thread that answers it. The HTTP
// side cancels when its client has gone; the engine aborts the request at its next step.
class ResponseChannel {
 public:
  void push(StreamEvent event);
  // The events that arrived, waiting up to `timeout` for the first one.
  std::vector<StreamEvent> take(std::chrono::milliseconds timeout);
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<StreamEvent> events_;
  std::atomic<bool> cancelled_{false};
};

struct GenerationJob {
  std::string id;  // for the log: "<request id>#<choice>"
  int64_t index = 0;
  std::vector<int32_t> prompt;
  int64_t max_tokens = 0;
  Sampling sampling;  // the seed is set
  std::vector<std::string> stop_strings;
  std::vector<int32_t> stop_ids;
  std::vector<int64_t> cache_points;  // PreparedPrompt::cache_points
  std::shared_ptr<ResponseChannel> channel;
  std::chrono::steady_clock::time_point arrived;
};

// What the engine holds now, for /metrics.
struct GeneratorStats {
  int64_t running = 0, waiting = 0;
  int64_t kv_blocks_used = 0, kv_blocks_total = 0;
  int64_t kv_bytes_held = 0, kv_dense_bytes = 0, kv_bytes_held_peak = 0;
  int64_t kv_shared_bytes_saved = 0;  // CacheStats::shared_bytes_saved
  int64_t preemptions = 0;
  int64_t prefix_cache_hit_tokens = 0;  // EngineStats::prefix_hit_tokens
  int64_t prefix_cache_entries = 0;
  int64_t prefix_cache_blocks = 0;  // Engine::prefix_blocks
};

class Generator {
 public:
  enum class Admission { Queued, QueueFull, ShuttingDown };
  virtual ~Generator() = default;
  // Queues all of `jobs` (the choices of one request) or none.
  virtual Admission submit(std::vector<GenerationJob> jobs) = 0;
  virtual GeneratorStats stats() const = 0;
};

}  // namespace dms::serve
