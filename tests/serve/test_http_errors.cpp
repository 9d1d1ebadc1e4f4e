// Every error status the server answers, in OpenAI's shape with the field at fault: 400, 401,
// 404, 413 and 503 (queue full), and the requests that must still pass beside them.
#include <optional>
#include <thread>

#include "prometheus_text.h"
#include "server_fixture.h"

namespace dms::serve {
namespace {

using test::body_of;
using test::expect_error;
using test::json;
using test::wait_until;

class Errors : public test::ServerTest {};

// dms_requests_rejected_total{status} in a /metrics body.
double rejected(const std::string& metrics, int status) {
  const test::Exposition e = test::parse_prometheus(metrics);
  for (const auto& error : e.errors) ADD_FAILURE() << error;
  return e.value("dms_requests_rejected_total", {{"status", std::to_string(status)}});
}

TEST_F(Errors, BadRequests) {
  start();
  const auto raw = [&](const std::string& path, const std::string& body) {
    return client().Post(path.c_str(), body, "application/json");
  };
  expect_error(raw("/v1/chat/completions", "{\"messages\": ["), 400, nullptr, "not valid JSON");
  expect_error(raw("/v1/completions", "[1, 2, 3]"), 400, nullptr, "must be a JSON object, got array");
  expect_error(post("/v1/chat/completions", json::object()), 400, "messages", "is required");
  expect_error(post("/v1/completions", {{"prompt", "x"}, {"temperature", 9}}), 400, "temperature",
               "must be in [0, 2]");
  expect_error(post("/v1/completions", {{"prompt", "x"}, {"n", 17}}), 400, "n", "between 1 and 16");
  expect_error(post("/v1/chat/completions",
                    {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"logprobs", true}}),
               400, "logprobs", "not supported");
  expect_error(post("/v1/completions", {{"prompt", {1, 2}}, {"max_tokens", kContext}}), 400, "max_tokens",
               "exceeds the model's context length of 256");
  expect_error(post("/v1/completions", {{"prompt", {1, 99999999}}}), 400, "prompt[1]", "outside the vocabulary");
  expect_error(post("/v1/completions", {{"prompt", "x"}, {"model", "gpt-4o"}}), 404, "model",
               "the model 'gpt-4o' does not exist");
  expect_error(post("/tokenize", {{"prompt", 1}}), 400, "prompt", "expected a string");
  expect_error(post("/detokenize", {{"tokens", {-1}}}), 400, "tokens[0]", "outside the vocabulary");
  expect_error(get("/v1/nothing"), 404, nullptr, "no endpoint GET /v1/nothing");
  expect_error(client().Post("/v1/nothing", "{}", "application/json"), 404, nullptr, "no endpoint POST /v1/nothing");
  // None of them reached the generator; a good request still does.
  EXPECT_TRUE(fake_->submitted().empty());
  const auto ok = post("/v1/completions", {{"prompt", "x"}, {"model", kModelName}, {"max_tokens", 2}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
}

TEST_F(Errors, ApiKey) {
  ServerOptions options;
  options.api_key = "sk-test-123";
  start(options);
  const json body = {{"prompt", {1, 2}}, {"max_tokens", 1}};
  expect_error(post("/v1/completions", body), 401, nullptr, "missing API key");
  expect_error(post("/v1/completions", body, {{"Authorization", "Bearer sk-test-124"}}), 401, nullptr,
               "invalid API key");
  expect_error(post("/v1/completions", body, {{"Authorization", "sk-test-123"}}), 401, nullptr, "invalid API key");
  expect_error(get("/v1/models"), 401, nullptr, "missing API key");
  expect_error(post("/tokenize", {{"prompt", "x"}}), 401, nullptr, "missing API key");
  expect_error(post("/detokenize", {{"tokens", {1}}}), 401, nullptr, "missing API key");
  EXPECT_EQ(body_of(get("/v1/models"))["error"]["type"], "authentication_error");
  EXPECT_TRUE(fake_->submitted().empty());

  const httplib::Headers key = {{"Authorization", "Bearer sk-test-123"}};
  auto r = post("/v1/completions", body, key);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  r = get("/v1/models", key);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  // Probes and scrapers need no key.
  r = get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(body_of(r), (json{{"status", "ok"}}));
  r = get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(rejected(r->body, 401), 7);
}

TEST_F(Errors, OversizedBody) {
  ServerOptions options;
  options.max_body_bytes = 512;
  start(options);
  // Within the limit passes; past it is refused before any parsing.
  const json small = {{"prompt", std::string(300, 'a')}, {"max_tokens", 1}};
  ASSERT_LE(small.dump().size(), 512u);
  const auto ok = post("/v1/completions", small);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  const json big = {{"prompt", std::string(2000, 'a')}, {"max_tokens", 1}};
  expect_error(post("/v1/completions", big), 413, nullptr, "larger than the limit of 512 bytes");
  EXPECT_EQ(fake_->submitted().size(), 1u);
  // The server goes on.
  const auto after = post("/v1/completions", small);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 200);
  EXPECT_EQ(rejected(get("/metrics")->body, 413), 1);
}

TEST_F(Errors, QueueFull) {
  start(ServerOptions{}, /*max_queue=*/2);
  fake_->hold(true);
  // Two choices fill the queue; their request waits for them.
  std::optional<httplib::Result> first;
  std::thread waiting([&] { first.emplace(post("/v1/completions", {{"prompt", {3, 4}}, {"max_tokens", 2}, {"n", 2}})); });
  ASSERT_TRUE(wait_until([&] { return fake_->stats().waiting == 2; }, std::chrono::seconds(10)));
  const auto full = post("/v1/completions", {{"prompt", {5}}, {"max_tokens", 1}});
  expect_error(full, 503, nullptr, "queue is full");
  ASSERT_TRUE(full);
  EXPECT_EQ(full->get_header_value("Retry-After"), "1");
  // A request is queued whole or not at all.
  EXPECT_EQ(fake_->submitted().size(), 2u);
  fake_->hold(false);
  waiting.join();
  ASSERT_TRUE(first && *first);
  EXPECT_EQ((*first)->status, 200);
  EXPECT_EQ(body_of(*first)["choices"][1]["text"], "[1] 3 4");
  // With room again, requests pass.
  const auto again = post("/v1/completions", {{"prompt", {5}}, {"max_tokens", 1}});
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);
  EXPECT_EQ(rejected(get("/metrics")->body, 503), 1);
}

}  // namespace
}  // namespace dms::serve
