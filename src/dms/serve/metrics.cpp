#include "dms/serve/metrics.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace dms::serve {

namespace {

// The shortest text that reads back as x: "0.1", not "0.10000000000000001".
std::string number(double x) {
  char buf[32];
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  return buf;
}

void header(std::string& out, const std::string& name, const char* type, const char* help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void metric(std::string& out, const std::string& name, const char* type, const char* help, double value) {
  header(out, name, type, help);
  out += name + " " + number(value) + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name) const {
  int64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    out += name + "_bucket{le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_sum " + number(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

ServeMetrics::ServeMetrics()
    : ttft_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160}),
      itl_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}),
      latency_({0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640}) {}

void ServeMetrics::received(int64_t sequences, int64_t prompt_tokens) {
  std::lock_guard<std::mutex> lock(mutex_);
  received_ += sequences;
  prompt_tokens_ += prompt_tokens;
}

void ServeMetrics::generated(int64_t tokens) {
  std::lock_guard<std::mutex> lock(mutex_);
  generated_tokens_ += tokens;
}

void ServeMetrics::finished(const std::string& finish_reason) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (finish_reason == "abort")
    ++aborted_;
  else
    ++finished_[finish_reason];
}

void ServeMetrics::rejected(int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++rejected_[status];
}

void ServeMetrics::evicted(int64_t keys) {
  std::lock_guard<std::mutex> lock(mutex_);
  evicted_keys_ += keys;
}

void ServeMetrics::time_to_first_token(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  ttft_.observe(seconds);
}

void ServeMetrics::inter_token_latency(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  itl_.observe(seconds);
}

void ServeMetrics::request_latency(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  latency_.observe(seconds);
}

std::string ServeMetrics::render(const GeneratorStats& e) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  metric(out, "dms_requests_running", "gauge", "Sequences in the KV cache.", e.running);
  metric(out, "dms_requests_waiting", "gauge", "Sequences queued for the KV cache.", e.waiting);
  metric(out, "dms_requests_received_total", "counter", "Sequences queued (one per choice).", received_);
  header(out, "dms_requests_finished_total", "counter", "Sequences that ended, by finish_reason (aborts apart).");
  for (const char* reason : {"stop", "length", "error"}) {
    auto it = finished_.find(reason);
    out += std::string("dms_requests_finished_total{finish_reason=\"") + reason + "\"} " +
           std::to_string(it == finished_.end() ? 0 : it->second) + "\n";
  }
  metric(out, "dms_requests_aborted_total", "counter", "Sequences aborted: their client went away, or shutdown.",
         aborted_);
  header(out, "dms_requests_rejected_total", "counter", "Requests refused before the engine, by HTTP status.");
  for (const auto& [status, count] : rejected_)
    out += "dms_requests_rejected_total{status=\"" + std::to_string(status) + "\"} " + std::to_string(count) + "\n";
  metric(out, "dms_prompt_tokens_total", "counter", "Prompt tokens queued for prefill.", prompt_tokens_);
  metric(out, "dms_generation_tokens_total", "counter", "Tokens generated.", generated_tokens_);
  header(out, "dms_time_to_first_token_seconds", "histogram", "From arrival to the first generated token.");
  ttft_.render(out, "dms_time_to_first_token_seconds");
  header(out, "dms_inter_token_latency_seconds", "histogram", "Between consecutive tokens of a sequence.");
  itl_.render(out, "dms_inter_token_latency_seconds");
  header(out, "dms_request_latency_seconds", "histogram", "From arrival to the last token.");
  latency_.render(out, "dms_request_latency_seconds");
  metric(out, "dms_kv_blocks_used", "gauge", "KV cache blocks in use (all layers).", e.kv_blocks_used);
  metric(out, "dms_kv_blocks_total", "gauge", "KV cache blocks (all layers).", e.kv_blocks_total);
  metric(out, "dms_kv_bytes_held", "gauge", "Bytes of keys and values the cache holds.", e.kv_bytes_held);
  metric(out, "dms_kv_dense_bytes", "gauge", "Bytes a dense cache would hold for the same sequences.",
         e.kv_dense_bytes);
  metric(out, "dms_kv_bytes_held_peak", "gauge", "Largest dms_kv_bytes_held since start.", e.kv_bytes_held_peak);
  metric(out, "dms_kv_shared_bytes_saved", "gauge",
         "Bytes the sequences hold in blocks shared with others beyond one copy (the choices of one prompt).",
         e.kv_shared_bytes_saved);
  metric(out, "dms_evicted_keys_total", "counter", "Keys evicted, counted when their sequence ends.", evicted_keys_);
  metric(out, "dms_preemptions_total", "counter", "Sequences preempted for memory (prefilled again later).",
         e.preemptions);
  metric(out, "dms_prefix_cache_hit_tokens_total", "counter",
         "Prompt tokens not run because the prefix cache held their keys.", e.prefix_cache_hit_tokens);
  metric(out, "dms_prefix_cache_entries", "gauge",
         "Prefixes the cache keeps (prompts at each prefill chunk's end, finished sequences).", e.prefix_cache_entries);
  metric(out, "dms_prefix_cache_blocks", "gauge",
         "KV cache blocks only the prefix cache holds (given back first when requests need room).",
         e.prefix_cache_blocks);
  return out;
}

}  // namespace dms::serve
