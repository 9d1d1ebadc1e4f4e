// Histogram buckets against a plain re-count, and ServeMetrics::render read back as Prometheus
// text: every family described, the counters adding up as metrics.h promises.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "dms/serve/metrics.h"
#include "prometheus_text.h"

namespace dms::serve {
namespace {

using test::Exposition;
using test::parse_prometheus;

// A histogram's lines need a HELP and a TYPE around them to be a valid exposition.
Exposition render_histogram(const Histogram& h) {
  std::string out = "# HELP t_seconds A test histogram.\n# TYPE t_seconds histogram\n";
  h.render(out, "t_seconds");
  return parse_prometheus(out);
}

TEST(Histogram, BucketsAgainstARecount) {
  // 0.1 and 0.3 have no exact binary form: their le labels must still read back as the bounds.
  const std::vector<double> bounds = {0.1, 0.3, 1, 2.5};
  // On each bound (le means "less or equal"), either side of it, below all and above all.
  const std::vector<double> values = {-1, 0, 0.1, 0.1000001, 0.3, 0.29, 1, 1, 0.999, 2.5, 2.5000001, 7, 1e9, 0.05};
  Histogram h(bounds);
  for (double v : values) h.observe(v);
  const Exposition e = render_histogram(h);
  EXPECT_TRUE(e.errors.empty()) << e.errors.front();

  const auto buckets = e.all("t_seconds_bucket");
  ASSERT_EQ(buckets.size(), bounds.size() + 1);
  for (size_t i = 0; i < bounds.size(); ++i) {
    EXPECT_EQ(std::stod(buckets[i].labels.at("le")), bounds[i]);
    int64_t at_most = 0;
    for (double v : values) at_most += v <= bounds[i];
    EXPECT_EQ(buckets[i].value, static_cast<double>(at_most)) << "le=" << bounds[i];
  }
  EXPECT_EQ(buckets.back().labels.at("le"), "+Inf");
  EXPECT_EQ(buckets.back().value, static_cast<double>(values.size()));
  double sum = 0;
  for (double v : values) sum += v;
  EXPECT_DOUBLE_EQ(e.value("t_seconds_sum"), sum);
  EXPECT_EQ(e.value("t_seconds_count"), static_cast<double>(values.size()));
}

TEST(Histogram, Empty) {
  const Exposition e = render_histogram(Histogram({1, 2}));
  EXPECT_TRUE(e.errors.empty()) << e.errors.front();
  for (const auto& b : e.all("t_seconds_bucket")) EXPECT_EQ(b.value, 0);
  EXPECT_EQ(e.value("t_seconds_sum"), 0);
  EXPECT_EQ(e.value("t_seconds_count"), 0);
}

// The reader the checks below rely on does catch broken text.
TEST(PrometheusReader, FlagsBrokenText) {
  const std::string ok = "# HELP a_total A.\n# TYPE a_total counter\na_total 3\n";
  EXPECT_TRUE(parse_prometheus(ok).errors.empty());
  EXPECT_EQ(parse_prometheus(ok).value("a_total"), 3);
  const std::vector<std::string> broken = {
      "a_total 3\n",                                                      // no HELP or TYPE
      "# HELP a_total A.\n# TYPE a_total counter\na_total three\n",       // not a number
      "# HELP a A.\n# TYPE a counter\na 3\n",                            // a counter without _total
      "# HELP a_total A.\n# TYPE a_total counter\na_total 3",              // no final newline
      "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\nb 1\na 2\n",  // a split family
      "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
      "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",  // no +Inf bucket
  };
  for (const auto& text : broken) EXPECT_FALSE(parse_prometheus(text).errors.empty()) << text;
}

TEST(ServeMetrics, RendersValidPrometheusText) {
  ServeMetrics m;
  // Three requests: n=3 with a 10-token prompt, n=1 with 8, n=2 with 5: six sequences.
  m.received(3, 3 * 10);
  m.received(1, 8);
  m.received(2, 2 * 5);
  const std::vector<std::string> reasons = {"stop", "length", "stop", "abort"};  // four have ended
  for (const auto& r : reasons) m.finished(r);
  m.generated(40);
  m.generated(2);
  m.rejected(400);
  m.rejected(400);
  m.rejected(503);
  m.evicted(1234);
  const std::vector<double> ttfts = {0.02, 0.3, 7};
  for (double t : ttfts) m.time_to_first_token(t);
  m.inter_token_latency(0.004);
  m.request_latency(1.5);
  m.request_latency(0.05);
  GeneratorStats engine;
  engine.running = 1;  // the two sequences that have not ended
  engine.waiting = 1;
  engine.kv_blocks_used = 12;
  engine.kv_blocks_total = 480;
  engine.kv_bytes_held = 3 << 20;
  engine.kv_dense_bytes = 9 << 20;
  engine.kv_bytes_held_peak = 5 << 20;
  engine.kv_shared_bytes_saved = 1 << 20;
  engine.preemptions = 2;
  engine.prefix_cache_hit_tokens = 640;
  engine.prefix_cache_entries = 5;
  engine.prefix_cache_blocks = 7;

  const Exposition e = parse_prometheus(m.render(engine));
  for (const auto& error : e.errors) ADD_FAILURE() << error;

  // Every family of metrics.h, described with its type.
  const std::vector<std::pair<std::string, std::string>> families = {
      {"dms_requests_running", "gauge"},
      {"dms_requests_waiting", "gauge"},
      {"dms_requests_received_total", "counter"},
      {"dms_requests_finished_total", "counter"},
      {"dms_requests_aborted_total", "counter"},
      {"dms_requests_rejected_total", "counter"},
      {"dms_prompt_tokens_total", "counter"},
      {"dms_generation_tokens_total", "counter"},
      {"dms_time_to_first_token_seconds", "histogram"},
      {"dms_inter_token_latency_seconds", "histogram"},
      {"dms_request_latency_seconds", "histogram"},
      {"dms_kv_blocks_used", "gauge"},
      {"dms_kv_blocks_total", "gauge"},
      {"dms_kv_bytes_held", "gauge"},
      {"dms_kv_dense_bytes", "gauge"},
      {"dms_kv_bytes_held_peak", "gauge"},
      {"dms_kv_shared_bytes_saved", "gauge"},
      {"dms_evicted_keys_total", "counter"},
      {"dms_preemptions_total", "counter"},
      {"dms_prefix_cache_hit_tokens_total", "counter"},
      {"dms_prefix_cache_entries", "gauge"},
      {"dms_prefix_cache_blocks", "gauge"},
  };
  for (const auto& [name, type] : families) {
    EXPECT_EQ(e.type.count(name) ? e.type.at(name) : "(none)", type) << name;
    EXPECT_FALSE(e.help.count(name) ? e.help.at(name).empty() : true) << name << " has no HELP";
  }
  EXPECT_EQ(e.type.size(), families.size());

  EXPECT_EQ(e.value("dms_requests_received_total"), 6);
  EXPECT_EQ(e.value("dms_prompt_tokens_total"), 30 + 8 + 10);
  EXPECT_EQ(e.value("dms_generation_tokens_total"), 42);
  EXPECT_EQ(e.value("dms_requests_finished_total", {{"finish_reason", "stop"}}), 2);
  EXPECT_EQ(e.value("dms_requests_finished_total", {{"finish_reason", "length"}}), 1);
  EXPECT_EQ(e.value("dms_requests_finished_total", {{"finish_reason", "error"}}), 0);
  EXPECT_EQ(e.value("dms_requests_aborted_total"), 1);
  EXPECT_EQ(e.value("dms_requests_rejected_total", {{"status", "400"}}), 2);
  EXPECT_EQ(e.value("dms_requests_rejected_total", {{"status", "503"}}), 1);
  EXPECT_EQ(e.all("dms_requests_rejected_total").size(), 2u);
  EXPECT_EQ(e.value("dms_evicted_keys_total"), 1234);
  EXPECT_EQ(e.value("dms_requests_running"), 1);
  EXPECT_EQ(e.value("dms_requests_waiting"), 1);
  EXPECT_EQ(e.value("dms_kv_blocks_used"), 12);
  EXPECT_EQ(e.value("dms_kv_blocks_total"), 480);
  EXPECT_EQ(e.value("dms_kv_bytes_held"), 3 << 20);
  EXPECT_EQ(e.value("dms_kv_dense_bytes"), 9 << 20);
  EXPECT_EQ(e.value("dms_kv_bytes_held_peak"), 5 << 20);
  EXPECT_EQ(e.value("dms_kv_shared_bytes_saved"), 1 << 20);
  EXPECT_EQ(e.value("dms_preemptions_total"), 2);
  EXPECT_EQ(e.value("dms_prefix_cache_hit_tokens_total"), 640);
  EXPECT_EQ(e.value("dms_prefix_cache_entries"), 5);
  EXPECT_EQ(e.value("dms_prefix_cache_blocks"), 7);
  EXPECT_EQ(e.value("dms_time_to_first_token_seconds_count"), 3);
  EXPECT_DOUBLE_EQ(e.value("dms_time_to_first_token_seconds_sum"), 0.02 + 0.3 + 7);
  EXPECT_EQ(e.value("dms_time_to_first_token_seconds_bucket", {{"le", "0.5"}}), 2);
  EXPECT_EQ(e.value("dms_inter_token_latency_seconds_count"), 1);
  EXPECT_EQ(e.value("dms_request_latency_seconds_count"), 2);

  // metrics.h: received = finished (all reasons) + aborted + running + waiting.
  double ended = 0;
  for (const auto& s : e.all("dms_requests_finished_total")) ended += s.value;
  EXPECT_EQ(e.value("dms_requests_received_total"), ended + e.value("dms_requests_aborted_total") +
                                                        e.value("dms_requests_running") +
                                                        e.value("dms_requests_waiting"));
}

TEST(ServeMetrics, FreshIsAllZero) {
  const Exposition e = parse_prometheus(ServeMetrics().render(GeneratorStats{}));
  for (const auto& error : e.errors) ADD_FAILURE() << error;
  for (const auto& s : e.samples) EXPECT_EQ(s.value, 0) << s.name;
  EXPECT_TRUE(e.all("dms_requests_rejected_total").empty());
}

}  // namespace
}  // namespace dms::serve
