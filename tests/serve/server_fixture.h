// An HttpServer on a loopback port over a FakeGenerator, run() in its own thread, and the
// client-side helpers the HTTP tests share: JSON posts, OpenAI error shapes, SSE parsing.
#pragma once
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "dms/serve/http_server.h"
#include "fake_generator.h"
#include "serve_test_model.h"

namespace dms::serve::test {

using nlohmann::json;

class ServerTest : public ::testing::Test {
 protected:
  static constexpr int64_t kContext = 256;
  static constexpr const char* kModelName = kServedName;

  // Starts a server with these options on a free port (host and port are set here).
  void start(ServerOptions options = {}, int64_t max_queue = 64,
             std::chrono::milliseconds step_delay = std::chrono::milliseconds(2));
  // stop(), then the generator: what still runs ends so that run() can return.
  void TearDown() override;

  httplib::Client client() const;
  httplib::Result post(const std::string& path, const json& body, const httplib::Headers& headers = {}) const;
  httplib::Result get(const std::string& path, const httplib::Headers& headers = {}) const;

  ServeMetrics metrics_;
  std::unique_ptr<FakeGenerator> fake_;
  std::unique_ptr<HttpServer> server_;
  std::thread runner_;
  int port_ = 0;
};

// The body of a JSON response; fails the test (and gives null) when it is not JSON.
json body_of(const httplib::Result& r);

// An OpenAI-shaped error: {"error": {"message", "type", "param", "code"}} and nothing else, code
// the status, param as given (null for none), the message holding `message_part`.
void expect_error(const httplib::Result& r, int status, const json& param, const std::string& message_part);

// A text/event-stream body: the JSON of each "data:" event, whether "data: [DONE]" ended it,
// and what broke the framing (anything after [DONE], a line that is neither data nor comment).
struct Sse {
  std::vector<json> events;
  bool done = false;
  std::vector<std::string> errors;
};
Sse parse_sse(const std::string& body);

// Polls `condition` every 5 ms until it holds or `timeout` passes; its last answer.
bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

// The text FakeGenerator writes for choice `index` of `prompt` in `tokens` pieces, spelled out
// from its description (fake_generator.h) rather than taken from it.
std::string fake_text(int64_t index, const std::vector<int32_t>& prompt, int64_t tokens);

}  // namespace dms::serve::test
