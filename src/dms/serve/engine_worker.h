// The Generator that runs jobs on the Engine: one thread owns the Engine and the cache, takes
// queued jobs in between steps, aborts those whose client went away, and sends each sequence's
// text to its request's channel as it is decoded.
#pragma once
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "dms/engine/engine.h"
#include "dms/serve/generator.h"
#include "dms/serve/metrics.h"

namespace dms::serve {

class EngineWorker final : public Generator {
 public:
  // `max_queue`: most sequences waiting for the cache (beyond those running) before submit says
  // QueueFull. Starts the engine thread.
  EngineWorker(const Model& model, PagedKVCache& cache, EngineOptions options, int64_t max_queue,
               ServeMetrics& metrics);
  ~EngineWorker() override;  // shutdown(0)

  Admission submit(std::vector<GenerationJob> jobs) override;
  GeneratorStats stats() const override;
  // Refuses new jobs, lets the running ones go on for up to `grace`, aborts what is left, and
  // joins the engine thread once every job has its finish event.
  void shutdown(std::chrono::milliseconds grace);

 private:
  struct Active;
  void loop();
  void start_jobs(std::vector<GenerationJob>& jobs, std::vector<Active>& active);
  void step_engine(std::vector<Active>& active);
  void collect(std::vector<Active>& active);
  void publish_stats();

  Engine engine_;
  PagedKVCache& cache_;
  int64_t max_running_;
  int64_t max_queue_;
  ServeMetrics& metrics_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<GenerationJob> incoming_;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point abort_at_;  // with stopping_: when what still runs is aborted
  GeneratorStats stats_;
  std::chrono::steady_clock::time_point prefix_blocks_at_;  // when stats_.prefix_cache_blocks was counted
  std::thread thread_;
};

}  // namespace dms::serve
