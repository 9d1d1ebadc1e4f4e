// parse_completion_request: every validation rule, each error naming its field in ApiError::param
// and in its message; what passes lands in the struct.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "dms/serve/protocol.h"
#include "serve_test_model.h"

namespace dms::serve {
namespace {

using nlohmann::json;
using test::expect_api_error;

constexpr int64_t kMaxN = 4;

json chat_body(json extra = json::object()) {
  json body = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}};
  body.update(extra);
  return body;
}

json completion_body(json extra = json::object()) {
  json body = {{"prompt", "Once upon a time"}};
  body.update(extra);
  return body;
}

CompletionRequest chat(const json& body) { return parse_completion_request(body.dump(), Endpoint::Chat, kMaxN); }
CompletionRequest completion(const json& body) {
  return parse_completion_request(body.dump(), Endpoint::Completions, kMaxN);
}

void expect_chat_error(const json& body, const std::string& param, const std::vector<std::string>& parts = {}) {
  SCOPED_TRACE(body.dump());
  expect_api_error([&] { chat(body); }, 400, param, parts);
}

void expect_completion_error(const json& body, const std::string& param, const std::vector<std::string>& parts = {}) {
  SCOPED_TRACE(body.dump());
  expect_api_error([&] { completion(body); }, 400, param, parts);
}

TEST(ParseRequest, MalformedJsonAndNonObjectBodies) {
  // A number past a double is nlohmann's out_of_range, not a parse_error: still a 400.
  for (const char* text : {"{\"messages\": [", "", "{'prompt': 'x'}", "{\"prompt\": \"x\"} trailing", "{\"n\": 1e999}"}) {
    SCOPED_TRACE(text);
    expect_api_error([&] { parse_completion_request(text, Endpoint::Chat, kMaxN); }, 400, "", {"not valid JSON"});
  }
  const std::vector<std::pair<const char*, const char*>> non_objects = {
      {"[1, 2]", "array"}, {"\"text\"", "string"}, {"null", "null"}, {"42", "number"}, {"true", "boolean"}};
  for (const auto& [text_, type] : non_objects) {
    const char* text = text_;  // a plain variable: lambdas may capture it
    SCOPED_TRACE(text);
    expect_api_error([&] { parse_completion_request(text, Endpoint::Completions, kMaxN); }, 400, "",
                     {"must be a JSON object", std::string("got ") + type});
  }
}

TEST(ParseRequest, Messages) {
  expect_chat_error(json::object(), "messages", {"messages: is required"});
  expect_chat_error({{"messages", nullptr}}, "messages", {"is required"});  // null is "not set"
  expect_chat_error({{"messages", "Hi"}}, "messages", {"expected a list of messages, got string"});
  expect_chat_error({{"messages", json::array()}}, "messages", {"must not be empty"});
  expect_chat_error({{"messages", {42}}}, "messages[0]", {"messages[0]: expected an object, got number"});
  const json user = {{"role", "user"}, {"content", "Hi"}};
  expect_chat_error({{"messages", {user, {{"content", "x"}}}}}, "messages[1].role", {"is required"});
  expect_chat_error({{"messages", {{{"role", 7}, {"content", "x"}}}}}, "messages[0].role",
                    {"expected a string, got number"});
  expect_chat_error({{"messages", {user, {{"role", "tool"}, {"content", "x"}}}}}, "messages[1].role",
                    {"'tool' is not supported"});
  expect_chat_error({{"messages", {{{"role", "user"}}}}}, "messages[0].content", {"is required"});
  expect_chat_error({{"messages", {{{"role", "user"}, {"content", 5}}}}}, "messages[0].content",
                    {"expected a string or a list of text parts, got number"});
}

TEST(ParseRequest, ContentPartsAndDeveloperRole) {
  const json parts = {{{"type", "text"}, {"text", "Hel"}}, {{"type", "text"}, {"text", "lo"}}};
  const CompletionRequest r = chat({{"messages",
                                     {{{"role", "developer"}, {"content", "Be brief."}},
                                      {{"role", "user"}, {"content", parts}},
                                      {{"role", "assistant"}, {"content", "Hi!"}}}}});
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[0].role, "system");  // developer is OpenAI's newer name for it
  EXPECT_EQ(r.messages[0].content, "Be brief.");
  EXPECT_EQ(r.messages[1].role, "user");
  EXPECT_EQ(r.messages[1].content, "Hello");  // the parts joined
  EXPECT_EQ(r.messages[2].role, "assistant");
  EXPECT_EQ(r.messages[2].content, "Hi!");

  const auto with_part = [](json part) {
    return json{{"messages", {{{"role", "user"}, {"content", {{{"type", "text"}, {"text", "a"}}, part}}}}}};
  };
  expect_chat_error(with_part("b"), "messages[0].content[1]", {"expected an object, got string"});
  expect_chat_error(with_part({{"type", "image_url"}, {"image_url", {{"url", "http://x/y.png"}}}}),
                    "messages[0].content[1].type", {"only text content parts"});
  expect_chat_error(with_part({{"text", "b"}}), "messages[0].content[1].type", {"only text content parts"});
  expect_chat_error(with_part({{"type", "text"}}), "messages[0].content[1].text", {"is required"});
  expect_chat_error(with_part({{"type", "text"}, {"text", 3}}), "messages[0].content[1].text",
                    {"expected a string, got number"});
}

TEST(ParseRequest, PromptForms) {
  EXPECT_EQ(completion(completion_body()).prompt, "Once upon a time");
  const CompletionRequest ids = completion({{"prompt", {17, 0, 2147483647}}});
  EXPECT_EQ(ids.prompt_ids, (std::vector<int32_t>{17, 0, 2147483647}));
  EXPECT_TRUE(ids.prompt.empty());
  // A batch of one is that prompt, as text or as ids.
  EXPECT_EQ(completion({{"prompt", {"one prompt"}}}).prompt, "one prompt");
  EXPECT_EQ(completion({{"prompt", {{5, 6, 7}}}}).prompt_ids, (std::vector<int32_t>{5, 6, 7}));

  expect_completion_error(json::object(), "prompt", {"prompt: is required"});
  expect_completion_error({{"prompt", 5}}, "prompt", {"expected a string or a list of token ids, got number"});
  expect_completion_error({{"prompt", json::array()}}, "prompt", {"must not be empty"});
  expect_completion_error({{"prompt", {json::array()}}}, "prompt", {"must not be empty"});
  expect_completion_error({{"prompt", {"a", "b"}}}, "prompt", {"a batch of 2 prompts is not supported"});
  expect_completion_error({{"prompt", {{1}, {2}, {3}}}}, "prompt", {"a batch of 3 prompts is not supported"});
  expect_completion_error({{"prompt", {1, "x"}}}, "prompt[1]", {"expected an integer, got string"});
  expect_completion_error({{"prompt", {1.5}}}, "prompt[0]", {"expected an integer, got number"});
  expect_completion_error({{"prompt", {1, -5}}}, "prompt[1]", {"token id -5 is out of range"});
  expect_completion_error({{"prompt", {2147483648LL}}}, "prompt[0]", {"token id 2147483648 is out of range"});
  expect_completion_error({{"prompt", {{1, 2}, "b"}}}, "prompt", {"a batch of 2 prompts"});
}

TEST(ParseRequest, MaxTokens) {
  EXPECT_FALSE(completion(completion_body()).max_tokens.has_value());
  EXPECT_EQ(completion(completion_body({{"max_tokens", 1}})).max_tokens, 1);
  EXPECT_EQ(chat(chat_body({{"max_completion_tokens", 9}})).max_tokens, 9);
  // Both given: max_completion_tokens, OpenAI's newer name, wins.
  EXPECT_EQ(chat(chat_body({{"max_tokens", 5}, {"max_completion_tokens", 9}})).max_tokens, 9);
  expect_completion_error(completion_body({{"max_tokens", 0}}), "max_tokens", {"must be at least 1, got 0"});
  expect_completion_error(completion_body({{"max_tokens", -3}}), "max_tokens", {"must be at least 1, got -3"});
  expect_chat_error(chat_body({{"max_completion_tokens", 0}}), "max_completion_tokens", {"at least 1"});
  expect_completion_error(completion_body({{"max_tokens", "10"}}), "max_tokens", {"expected an integer, got string"});
  expect_completion_error(completion_body({{"max_tokens", 2.5}}), "max_tokens", {"expected an integer, got number"});
  expect_completion_error(completion_body({{"max_tokens", 18446744073709551615ULL}}), "max_tokens", {"too large"});
}

TEST(ParseRequest, SamplingRanges) {
  const Sampling d = chat(chat_body()).sampling;
  EXPECT_EQ(d.temperature, 1.0);
  EXPECT_EQ(d.top_p, 1.0);
  EXPECT_EQ(d.min_p, 0.0);
  EXPECT_EQ(d.top_k, 0);
  EXPECT_FALSE(d.seed.has_value());

  const Sampling s = chat(chat_body({{"temperature", 0.25}, {"top_p", 0.5}, {"min_p", 0.05}, {"top_k", 40}, {"seed", 7}}))
                         .sampling;
  EXPECT_EQ(s.temperature, 0.25);
  EXPECT_EQ(s.top_p, 0.5);
  EXPECT_EQ(s.min_p, 0.05);
  EXPECT_EQ(s.top_k, 40);
  EXPECT_EQ(s.seed, 7u);
  // The ends of each range that are allowed.
  EXPECT_EQ(chat(chat_body({{"temperature", 0}})).sampling.temperature, 0.0);
  EXPECT_EQ(chat(chat_body({{"temperature", 2}})).sampling.temperature, 2.0);
  EXPECT_EQ(chat(chat_body({{"top_p", 1e-9}})).sampling.top_p, 1e-9);
  EXPECT_EQ(chat(chat_body({{"min_p", 1}})).sampling.min_p, 1.0);
  EXPECT_EQ(chat(chat_body({{"top_k", -1}})).sampling.top_k, 0);  // -1 is vLLM's "off"
  EXPECT_EQ(chat(chat_body({{"temperature", nullptr}})).sampling.temperature, 1.0);  // null: not set

  expect_chat_error(chat_body({{"temperature", -0.1}}), "temperature", {"must be in [0, 2], got -0.1"});
  expect_chat_error(chat_body({{"temperature", 2.01}}), "temperature", {"must be in [0, 2], got 2.01"});
  expect_chat_error(chat_body({{"temperature", "hot"}}), "temperature", {"expected a number, got string"});
  expect_chat_error(chat_body({{"temperature", true}}), "temperature", {"expected a number, got boolean"});
  expect_chat_error(chat_body({{"top_p", 0}}), "top_p", {"must be in (0, 1], got 0"});
  expect_chat_error(chat_body({{"top_p", 1.01}}), "top_p", {"must be in (0, 1]"});
  expect_chat_error(chat_body({{"min_p", -0.01}}), "min_p", {"must be in [0, 1]"});
  expect_chat_error(chat_body({{"min_p", 1.5}}), "min_p", {"must be in [0, 1], got 1.5"});
  expect_chat_error(chat_body({{"top_k", -2}}), "top_k", {"got -2"});
  expect_chat_error(chat_body({{"top_k", 1.5}}), "top_k", {"expected an integer"});
  expect_chat_error(chat_body({{"seed", "7"}}), "seed", {"expected an integer, got string"});
}

TEST(ParseRequest, N) {
  EXPECT_EQ(chat(chat_body()).n, 1);
  EXPECT_EQ(chat(chat_body({{"n", 1}})).n, 1);
  EXPECT_EQ(chat(chat_body({{"n", kMaxN}})).n, kMaxN);
  expect_chat_error(chat_body({{"n", 0}}), "n", {"must be between 1 and 4, got 0"});
  expect_chat_error(chat_body({{"n", kMaxN + 1}}), "n", {"must be between 1 and 4, got 5"});
  expect_chat_error(chat_body({{"n", "2"}}), "n", {"expected an integer, got string"});
}

TEST(ParseRequest, Stop) {
  EXPECT_TRUE(chat(chat_body()).stop.empty());
  EXPECT_EQ(chat(chat_body({{"stop", "END"}})).stop, (std::vector<std::string>{"END"}));
  EXPECT_EQ(completion(completion_body({{"stop", {"\n\n", "The end"}}})).stop,
            (std::vector<std::string>{"\n\n", "The end"}));
  EXPECT_TRUE(chat(chat_body({{"stop", json::array()}})).stop.empty());
  expect_chat_error(chat_body({{"stop", ""}}), "stop", {"must not be empty"});
  expect_chat_error(chat_body({{"stop", {"a", ""}}}), "stop", {"must not be empty"});
  expect_chat_error(chat_body({{"stop", {"a", 1}}}), "stop[1]", {"expected a string, got number"});
  expect_chat_error(chat_body({{"stop", 5}}), "stop", {"expected a string or a list of strings, got number"});
}

TEST(ParseRequest, StreamAndStreamOptions) {
  const CompletionRequest plain = chat(chat_body());
  EXPECT_FALSE(plain.stream);
  EXPECT_FALSE(plain.include_usage);
  const CompletionRequest streamed = chat(chat_body({{"stream", true}}));
  EXPECT_TRUE(streamed.stream);
  EXPECT_FALSE(streamed.include_usage);
  const CompletionRequest usage =
      completion(completion_body({{"stream", true}, {"stream_options", {{"include_usage", true}}}}));
  EXPECT_TRUE(usage.stream);
  EXPECT_TRUE(usage.include_usage);
  EXPECT_FALSE(chat(chat_body({{"stream", true}, {"stream_options", {{"include_usage", false}}}})).include_usage);

  expect_chat_error(chat_body({{"stream_options", {{"include_usage", true}}}}), "stream_options",
                    {"only allowed with \"stream\": true"});
  expect_chat_error(chat_body({{"stream", false}, {"stream_options", {{"include_usage", true}}}}), "stream_options");
  expect_chat_error(chat_body({{"stream", true}, {"stream_options", "usage"}}), "stream_options",
                    {"expected an object, got string"});
  expect_chat_error(chat_body({{"stream", true}, {"stream_options", {{"include_usage", "yes"}}}}),
                    "stream_options.include_usage", {"expected a boolean"});
  expect_chat_error(chat_body({{"stream", "true"}}), "stream", {"expected a boolean, got string"});
}

TEST(ParseRequest, ModelIgnoreEosAndUnknownFields) {
  EXPECT_EQ(chat(chat_body()).model, "");
  EXPECT_EQ(chat(chat_body({{"model", "smollm2"}})).model, "smollm2");
  expect_chat_error(chat_body({{"model", 3}}), "model", {"expected a string"});
  EXPECT_FALSE(chat(chat_body()).ignore_eos);
  EXPECT_TRUE(chat(chat_body({{"ignore_eos", true}})).ignore_eos);
  expect_chat_error(chat_body({{"ignore_eos", 1}}), "ignore_eos", {"expected a boolean"});

  const CompletionRequest r =
      chat(chat_body({{"user", "u-1"}, {"metadata", {{"k", {1, 2}}}}, {"store", false}, {"x_custom", nullptr}}));
  EXPECT_EQ(r.endpoint, Endpoint::Chat);
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0].content, "Hi");
}

// A field with a value that would change the answer in a way the server does not implement is
// refused; its "off" value is accepted.
struct Refusal {
  const char* field;
  json refused;
  json off;
  Endpoint endpoint;
};

TEST(ParseRequest, UnsupportedValuesRefusedOffValuesPass) {
  const json tool = {{"type", "function"}, {"function", {{"name", "f"}, {"parameters", json::object()}}}};
  const std::vector<Refusal> cases = {
      {"logprobs", true, false, Endpoint::Chat},
      {"logprobs", 5, 0, Endpoint::Completions},
      {"top_logprobs", 2, 0, Endpoint::Chat},
      {"echo", true, false, Endpoint::Completions},
      {"suffix", "tail", "", Endpoint::Completions},
      {"logit_bias", {{"50256", -100}}, json::object(), Endpoint::Chat},
      {"presence_penalty", 0.5, 0, Endpoint::Chat},
      {"frequency_penalty", -1.0, 0.0, Endpoint::Completions},
      {"repetition_penalty", 1.1, 1, Endpoint::Chat},
      {"tools", {tool}, json::array(), Endpoint::Chat},
      {"tool_choice", "required", "none", Endpoint::Chat},
      {"tool_choice", {{"type", "function"}, {"function", {{"name", "f"}}}}, "auto", Endpoint::Chat},
      {"functions", {tool["function"]}, nullptr, Endpoint::Chat},
      {"function_call", "auto", nullptr, Endpoint::Chat},
      {"response_format", {{"type", "json_object"}}, {{"type", "text"}}, Endpoint::Chat},
      {"response_format", "text", {{"type", "text"}}, Endpoint::Completions},
      {"best_of", 3, 1, Endpoint::Completions},
  };
  for (const Refusal& c : cases) {
    const json base = c.endpoint == Endpoint::Chat ? chat_body() : completion_body();
    json refused = base, off = base;
    refused[c.field] = c.refused;
    off[c.field] = c.off;
    SCOPED_TRACE(refused.dump());
    expect_api_error([&] { parse_completion_request(refused.dump(), c.endpoint, kMaxN); }, 400, c.field,
                     {std::string(c.field) + ": not supported"});
    EXPECT_NO_THROW(parse_completion_request(off.dump(), c.endpoint, kMaxN)) << off.dump();
  }
  // best_of equal to n asks for nothing beyond n choices.
  EXPECT_EQ(completion(completion_body({{"best_of", 3}, {"n", 3}})).n, 3);
  expect_completion_error(completion_body({{"best_of", 3}, {"n", 2}}), "best_of", {"only best_of equal to n"});
  // Wrong types of these fields are type errors, not refusals.
  expect_completion_error(completion_body({{"echo", "no"}}), "echo", {"expected a boolean"});
  expect_chat_error(chat_body({{"presence_penalty", "0"}}), "presence_penalty", {"expected a number"});
}

}  // namespace
}  // namespace dms::serve
