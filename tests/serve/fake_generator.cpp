#include "fake_generator.h"

#include <algorithm>

namespace dms::serve::test {

using Clock = std::chrono::steady_clock;

namespace {

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

FakeGenerator::FakeGenerator(ServeMetrics& metrics, int64_t max_queue, std::chrono::milliseconds step_delay)
    : metrics_(metrics), max_queue_(max_queue), step_delay_(step_delay), thread_([this] { loop(); }) {}

FakeGenerator::~FakeGenerator() { stop(); }

Generator::Admission FakeGenerator::submit(std::vector<GenerationJob> jobs) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return Admission::ShuttingDown;
    if (static_cast<int64_t>(queue_.size() + jobs.size()) > max_queue_) return Admission::QueueFull;
    for (GenerationJob& job : jobs) {
      submitted_.push_back(job);
      queue_.push_back(std::move(job));
    }
  }
  wake_.notify_one();
  return Admission::Queued;
}

GeneratorStats FakeGenerator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  GeneratorStats s;
  s.running = running_;
  s.waiting = static_cast<int64_t>(queue_.size());
  return s;
}

void FakeGenerator::hold(bool on) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    held_ = on;
  }
  wake_.notify_one();
}

void FakeGenerator::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

std::vector<GenerationJob> FakeGenerator::submitted() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return submitted_;
}

std::vector<std::pair<std::string, Finish>> FakeGenerator::finished() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return finished_;
}

bool FakeGenerator::step(Running& r, bool abort) {
  const GenerationJob& job = r.job;
  const auto now = Clock::now();
  std::string reason;
  if (abort || job.channel->cancelled()) {
    reason = "abort";
  } else {
    const int32_t id = job.prompt[static_cast<size_t>(r.written) % job.prompt.size()];
    if (std::find(job.stop_ids.begin(), job.stop_ids.end(), id) != job.stop_ids.end()) {
      reason = "stop";
    } else {
      // Appended, not "[" + ...: GCC 12 warns (-Wrestrict) wrongly about the inlined insert.
      std::string piece;
      if (r.written == 0) piece.append("[").append(std::to_string(job.index)).append("]");
      piece.append(" ").append(std::to_string(id));
      job.channel->push({job.index, piece, {}});
      if (r.written == 0)
        metrics_.time_to_first_token(seconds(now - job.arrived));
      else
        metrics_.inter_token_latency(seconds(now - r.last));
      metrics_.generated(1);
      r.last = now;
      if (++r.written == job.max_tokens) reason = "length";
    }
  }
  if (reason.empty()) return false;
  // Counted before the client can see the end, so a scrape after the response adds up.
  metrics_.finished(reason);
  metrics_.request_latency(seconds(now - job.arrived));
  const Finish finish{reason, "", r.written};
  {
    std::lock_guard<std::mutex> lock(mutex_);
    finished_.emplace_back(job.id, finish);
    --running_;
  }
  job.channel->push({job.index, "", finish});
  return true;
}

void FakeGenerator::loop() {
  std::vector<Running> running;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !running.empty() || (!held_ && !queue_.empty()); });
      if (stopping_) break;
      if (!held_) {
        for (GenerationJob& job : queue_) running.push_back({std::move(job), 0, {}});
        running_ += static_cast<int64_t>(queue_.size());
        queue_.clear();
      }
    }
    std::erase_if(running, [&](Running& r) { return step(r, false); });
    std::this_thread::sleep_for(step_delay_);
  }
  // Stopping: whatever is left ends now, so that no HTTP thread waits for it.
  for (Running& r : running) step(r, true);
  std::lock_guard<std::mutex> lock(mutex_);
  for (GenerationJob& job : queue_) {
    metrics_.finished("abort");
    job.channel->push({job.index, "", Finish{"abort", "", 0}});
  }
}

}  // namespace dms::serve::test
