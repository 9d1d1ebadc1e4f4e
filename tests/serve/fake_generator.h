// A Generator without a model for the HTTP tests. One thread steps every running job together,
// as the engine does: each step gives each job one piece of text, then sleeps `step_delay`.
// Choice i of prompt p writes "[i] p0", then " p1", " p2", ... (the prompt's ids as words,
// cycling) until max_tokens pieces ("length"), or until the next id is one of its stop ids
// ("stop"; the id is not written). A job whose channel is cancelled finishes with "abort" at its
// next step. It keeps ServeMetrics as EngineWorker does, so /metrics can be checked.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dms/serve/generator.h"
#include "dms/serve/metrics.h"

namespace dms::serve::test {

class FakeGenerator final : public Generator {
 public:
  // `max_queue`: most jobs waiting to start; a request that would pass it gets QueueFull.
  FakeGenerator(ServeMetrics& metrics, int64_t max_queue, std::chrono::milliseconds step_delay);
  ~FakeGenerator() override;  // stop()

  Admission submit(std::vector<GenerationJob> jobs) override;
  GeneratorStats stats() const override;

  // While held, queued jobs wait and count in stats().waiting.
  void hold(bool on);
  // Refuses new jobs, aborts the running ones and joins the thread.
  void stop();

  // Every job queued so far, in order.
  std::vector<GenerationJob> submitted() const;
  // How each finished job ended, by job id ("<request id>#<choice>").
  std::vector<std::pair<std::string, Finish>> finished() const;

 private:
  struct Running {
    GenerationJob job;
    int64_t written = 0;
    std::chrono::steady_clock::time_point last;
  };
  void loop();
  // One step of `r` (with `abort`, its end); true when it has ended.
  bool step(Running& r, bool abort);

  ServeMetrics& metrics_;
  const int64_t max_queue_;
  const std::chrono::milliseconds step_delay_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<GenerationJob> queue_, submitted_;
  std::vector<std::pair<std::string, Finish>> finished_;
  int64_t running_ = 0;
  bool held_ = false, stopping_ = false;
  std::thread thread_;
};

}  // namespace dms::serve::test
