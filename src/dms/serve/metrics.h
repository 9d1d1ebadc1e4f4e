// The server's counters and latency histograms, rendered in the Prometheus text format
// (GET /metrics) together with what the engine holds at the moment. Thread-safe.
//
// Requests are counted per choice (one sequence in the engine), so at any time
//   dms_requests_received_total = dms_requests_finished_total (summed over finish_reason)
//     + dms_requests_aborted_total + dms_requests_running + dms_requests_waiting.
// Requests refused before reaching the engine count in dms_requests_rejected_total{status}.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "dms/serve/generator.h"

namespace dms::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  // The _bucket (cumulative, then +Inf), _sum and _count lines of `name`.
  void render(std::string& out, const std::string& name) const;

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0;
  int64_t count_ = 0;
};

class ServeMetrics {
 public:
  ServeMetrics();
  void received(int64_t sequences, int64_t prompt_tokens);
  void generated(int64_t tokens);
  void finished(const std::string& finish_reason);  // "abort" counts as aborted
  void rejected(int status);
  void evicted(int64_t keys);
  void time_to_first_token(double seconds);
  void inter_token_latency(double seconds);
  void request_latency(double seconds);
  std::string render(const GeneratorStats& engine) const;

 private:
  mutable std::mutex mutex_;
  int64_t received_ = 0, prompt_tokens_ = 0, generated_tokens_ = 0, aborted_ = 0, evicted_keys_ = 0;
  std::map<std::string, int64_t> finished_;  // by finish_reason
  std::map<int, int64_t> rejected_;          // by HTTP status
  Histogram ttft_, itl_, latency_;
};

}  // namespace dms::serve
