// The server over time: /metrics after known traffic, a client that goes away mid-stream,
// draining, and stopping.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <future>
#include <optional>

#include "prometheus_text.h"
#include "serve_test_model.h"
#include "server_fixture.h"

namespace dms::serve {
namespace {

using namespace std::chrono_literals;
using test::body_of;
using test::expect_error;
using test::json;
using test::parse_sse;
using test::wait_until;

class Lifecycle : public test::ServerTest {};

TEST_F(Lifecycle, MetricsCountTheTraffic) {
  start();
  // Accepted: 1 + 3 + 2 sequences with prompts of 4, 2 and 3 tokens and 5, 3 and 6 tokens each
  // (ids clear of SmolLM2's EOS, 2, so that each runs to its max_tokens).
  ASSERT_EQ(post("/v1/completions", {{"prompt", {10, 20, 30, 40}}, {"max_tokens", 5}})->status, 200);
  ASSERT_EQ(post("/v1/completions", {{"prompt", {10, 20}}, {"max_tokens", 3}, {"n", 3}})->status, 200);
  const auto streamed =
      post("/v1/completions", {{"prompt", {10, 20, 30}}, {"max_tokens", 6}, {"n", 2}, {"stream", true}});
  ASSERT_EQ(streamed->status, 200);
  ASSERT_TRUE(parse_sse(streamed->body).done);
  // Refused: two 400s, a 404 model and a 404 path.
  ASSERT_EQ(post("/v1/completions", {{"prompt", "x"}, {"top_p", 0}})->status, 400);
  ASSERT_EQ(post("/v1/completions", {{"prompt", "x"}, {"n", 0}})->status, 400);
  ASSERT_EQ(post("/v1/completions", {{"prompt", "x"}, {"model", "other"}})->status, 404);
  ASSERT_EQ(get("/nowhere")->status, 404);

  const auto r = get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/plain; version=0.0.4");
  const test::Exposition e = test::parse_prometheus(r->body);
  for (const auto& error : e.errors) ADD_FAILURE() << error;
  const int64_t sequences = 1 + 3 + 2;
  EXPECT_EQ(e.value("dms_requests_received_total"), sequences);
  EXPECT_EQ(e.value("dms_prompt_tokens_total"), 4 + 2 + 3) << "the n choices of a request share one prefill";
  EXPECT_EQ(e.value("dms_generation_tokens_total"), 1 * 5 + 3 * 3 + 2 * 6);
  EXPECT_EQ(e.value("dms_requests_finished_total", {{"finish_reason", "length"}}), sequences);
  EXPECT_EQ(e.value("dms_requests_finished_total", {{"finish_reason", "stop"}}), 0);
  EXPECT_EQ(e.value("dms_requests_aborted_total"), 0);
  EXPECT_EQ(e.value("dms_requests_rejected_total", {{"status", "400"}}), 2);
  EXPECT_EQ(e.value("dms_requests_rejected_total", {{"status", "404"}}), 2);
  EXPECT_EQ(e.all("dms_requests_rejected_total").size(), 2u);
  EXPECT_EQ(e.value("dms_requests_running"), 0);
  EXPECT_EQ(e.value("dms_requests_waiting"), 0);
  EXPECT_EQ(e.value("dms_time_to_first_token_seconds_count"), sequences);
  EXPECT_EQ(e.value("dms_inter_token_latency_seconds_count"), 1 * 4 + 3 * 2 + 2 * 5);
  EXPECT_EQ(e.value("dms_request_latency_seconds_count"), sequences);
}

// A raw connection: a client that can leave without reading its response.
class RawClient {
 public:
  explicit RawClient(int port) : fd_(socket(AF_INET, SOCK_STREAM, 0)) {
    timeval timeout{10, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  }
  ~RawClient() { close(); }
  bool connected() const { return connected_; }
  bool send_post(const std::string& path, const std::string& body) {
    const std::string request = "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
                                "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    return ::send(fd_, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size());
  }
  // Reads until what came holds `count` copies of `marker` (or the connection ends).
  std::string read_until(const std::string& marker, int count) {
    std::string got;
    char buffer[4096];
    while (occurrences(got, marker) < count) {
      const ssize_t n = recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) break;
      got.append(buffer, static_cast<size_t>(n));
    }
    return got;
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  static int occurrences(const std::string& text, const std::string& marker) {
    int n = 0;
    for (size_t at = text.find(marker); at != std::string::npos; at = text.find(marker, at + 1)) ++n;
    return n;
  }

 private:
  int fd_;
  bool connected_ = false;
};

TEST_F(Lifecycle, ClientGoneMidStreamAbortsItsJob) {
  start(ServerOptions{}, 64, 5ms);
  RawClient raw(port_);
  ASSERT_TRUE(raw.connected());
  // 240 pieces at 5 ms: over a second of streaming, unless the abort comes first.
  const json body = {{"prompt", {41, 42}}, {"max_tokens", 240}, {"stream", true}};
  ASSERT_TRUE(raw.send_post("/v1/completions", body.dump()));
  const std::string head = raw.read_until("\"text\":", 3);
  ASSERT_EQ(head.rfind("HTTP/1.1 200", 0), 0u) << head;
  ASSERT_GE(RawClient::occurrences(head, "\"text\":"), 3) << head;
  EXPECT_EQ(server_->open_streams(), 1);
  raw.close();  // with its response unread: the kernel resets the connection

  ASSERT_TRUE(wait_until([&] { return fake_->finished().size() == 1; }, 10s)) << "the job never ended";
  const auto [id, finish] = fake_->finished()[0];
  EXPECT_EQ(finish.reason, "abort");
  EXPECT_LT(finish.completion_tokens, 240);
  EXPECT_TRUE(fake_->submitted().at(0).channel->cancelled());
  EXPECT_TRUE(wait_until([&] { return server_->open_streams() == 0; }, 5s));

  // The server goes on serving, and counts the abort.
  const auto r = post("/v1/completions", {{"prompt", {41, 42}}, {"max_tokens", 3}, {"stream", true}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(parse_sse(r->body).done);
  const test::Exposition e = test::parse_prometheus(get("/metrics")->body);
  EXPECT_EQ(e.value("dms_requests_aborted_total"), 1);
  EXPECT_EQ(e.value("dms_requests_finished_total", {{"finish_reason", "length"}}), 1);
  EXPECT_EQ(e.value("dms_requests_received_total"), 2);
  EXPECT_TRUE(wait_until([&] { return server_->open_streams() == 0; }, 5s));
}

// A stream whose job waits in the queue writes keep-alive comments: that is how a client that
// leaves before its first token is noticed, and its job dropped when it would start.
TEST_F(Lifecycle, ClientGoneWhileQueuedIsNoticedByTheKeepAlive) {
  start();
  fake_->hold(true);
  RawClient raw(port_);
  ASSERT_TRUE(raw.connected());
  ASSERT_TRUE(raw.send_post("/v1/completions", json{{"prompt", {41}}, {"max_tokens", 50}, {"stream", true}}.dump()));
  const std::string head = raw.read_until(": waiting", 1);
  ASSERT_EQ(head.rfind("HTTP/1.1 200", 0), 0u) << head;
  ASSERT_NE(head.find(": waiting\n\n"), std::string::npos) << head;
  raw.close();

  ASSERT_EQ(fake_->submitted().size(), 1u);
  const auto channel = fake_->submitted()[0].channel;
  EXPECT_TRUE(wait_until([&] { return channel->cancelled(); }, 10s)) << "the server never noticed";
  EXPECT_TRUE(wait_until([&] { return server_->open_streams() == 0; }, 5s));
  fake_->hold(false);
  ASSERT_TRUE(wait_until([&] { return fake_->finished().size() == 1; }, 10s));
  EXPECT_EQ(fake_->finished()[0].second.reason, "abort");
  EXPECT_EQ(fake_->finished()[0].second.completion_tokens, 0);
}

TEST_F(Lifecycle, DrainRefusesNewWorkAndFinishesOpenStreams) {
  start(ServerOptions{}, 64, 5ms);
  std::optional<httplib::Result> streamed;
  std::thread open([&] {
    streamed.emplace(post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "Go on."}}}},
                                             {"max_tokens", 60},
                                             {"stream", true},
                                             {"ignore_eos", true}}));
  });
  ASSERT_TRUE(wait_until([&] { return server_->open_streams() == 1; }, 10s));
  server_->drain();
  expect_error(post("/v1/completions", {{"prompt", {1}}, {"max_tokens", 1}}), 503, nullptr, "shutting down");
  expect_error(post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "x"}}}}}), 503, nullptr,
               "shutting down");
  const auto health = get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);
  EXPECT_EQ(body_of(health), (json{{"status", "shutting down"}}));
  EXPECT_EQ(fake_->submitted().size(), 1u);

  open.join();
  ASSERT_TRUE(streamed && *streamed);
  EXPECT_EQ((*streamed)->status, 200);
  const test::Sse sse = parse_sse((*streamed)->body);
  EXPECT_TRUE(sse.done) << "the open stream was cut off by drain()";
  ASSERT_FALSE(sse.events.empty());
  EXPECT_EQ(sse.events.back()["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(wait_until([&] { return server_->open_streams() == 0; }, 5s));
}

// stop() may come before the thread that calls run() gets there (a signal at start-up): run()
// must return anyway.
TEST(HttpServerStop, StopBeforeRunReturns) {
  ServeMetrics metrics;
  test::FakeGenerator fake(metrics, 4, 1ms);
  ServerOptions options;
  options.port = 0;
  HttpServer server(test::served_model(64), fake, metrics, options);
  ASSERT_GT(server.bind(), 0);
  server.stop();
  auto ran = std::async(std::launch::async, [&] { server.run(); });
  const bool returned = ran.wait_for(5s) == std::future_status::ready;
  EXPECT_TRUE(returned) << "run() after stop() went on serving";
  if (!returned) server.stop();  // now that it runs, let it go
  ran.wait();
}

}  // namespace
}  // namespace dms::serve
