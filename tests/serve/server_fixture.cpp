#include "server_fixture.h"

#include <sstream>

namespace dms::serve::test {

void ServerTest::start(ServerOptions options, int64_t max_queue, std::chrono::milliseconds step_delay) {
  fake_ = std::make_unique<FakeGenerator>(metrics_, max_queue, step_delay);
  options.host = "127.0.0.1";
  options.port = 0;
  server_ = std::make_unique<HttpServer>(served_model(kContext), *fake_, metrics_, options);
  port_ = server_->bind();
  ASSERT_GT(port_, 0);
  runner_ = std::thread([this] { server_->run(); });
}

void ServerTest::TearDown() {
  if (server_) {
    server_->stop();
    runner_.join();
  }
  if (fake_) fake_->stop();
}

httplib::Client ServerTest::client() const {
  httplib::Client c("127.0.0.1", port_);
  c.set_connection_timeout(5, 0);
  c.set_read_timeout(20, 0);
  return c;
}

httplib::Result ServerTest::post(const std::string& path, const json& body, const httplib::Headers& headers) const {
  return client().Post(path.c_str(), headers, body.dump(), "application/json");
}

httplib::Result ServerTest::get(const std::string& path, const httplib::Headers& headers) const {
  return client().Get(path.c_str(), headers);
}

json body_of(const httplib::Result& r) {
  if (!r) {
    ADD_FAILURE() << "no response: " << httplib::to_string(r.error());
    return nullptr;
  }
  try {
    return json::parse(r->body);
  } catch (const json::exception& e) {
    ADD_FAILURE() << "not JSON (" << e.what() << "): " << r->body;
    return nullptr;
  }
}

void expect_error(const httplib::Result& r, int status, const json& param, const std::string& message_part) {
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, status) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  const json body = body_of(r);
  ASSERT_TRUE(body.is_object() && body.size() == 1 && body.contains("error")) << r->body;
  const json& e = body["error"];
  EXPECT_EQ(e.size(), 4u) << r->body;
  ASSERT_TRUE(e.contains("message") && e["message"].is_string()) << r->body;
  EXPECT_NE(e["message"].get<std::string>().find(message_part), std::string::npos)
      << "'" << message_part << "' not in: " << e["message"];
  EXPECT_TRUE(e.contains("type") && e["type"].is_string() && !e["type"].get<std::string>().empty()) << r->body;
  EXPECT_EQ(e.value("param", json("(absent)")), param) << r->body;
  EXPECT_EQ(e.value("code", json()), status) << r->body;
}

Sse parse_sse(const std::string& body) {
  Sse out;
  // Events are separated by a blank line; each of ours is one "data:" line or one comment.
  size_t at = 0;
  while (at < body.size()) {
    const size_t end = body.find("\n\n", at);
    if (end == std::string::npos) {
      out.errors.push_back("an event without its blank line: " + body.substr(at));
      break;
    }
    const std::string event = body.substr(at, end - at);
    at = end + 2;
    if (!event.empty() && event[0] == ':') continue;  // a keep-alive comment
    if (event.rfind("data: ", 0) != 0) {
      out.errors.push_back("not a data line: " + event);
      continue;
    }
    if (out.done) out.errors.push_back("an event after [DONE]: " + event);
    const std::string data = event.substr(6);
    if (data == "[DONE]") {
      out.done = true;
      continue;
    }
    try {
      out.events.push_back(json::parse(data));
    } catch (const json::exception& e) {
      out.errors.push_back(std::string("not JSON: ") + data);
    }
  }
  return out;
}

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return condition();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

std::string fake_text(int64_t index, const std::vector<int32_t>& prompt, int64_t tokens) {
  std::ostringstream out;
  out << "[" << index << "]";
  for (int64_t k = 0; k < tokens; ++k) out << " " << prompt[static_cast<size_t>(k) % prompt.size()];
  return out.str();
}

}  // namespace dms::serve::test
