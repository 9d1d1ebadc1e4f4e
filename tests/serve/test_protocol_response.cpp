// The JSON the server answers with, field by field as OpenAI's API reference documents it:
// chat.completion / text_completion, their stream chunks, the usage chunk, and errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "dms/serve/protocol.h"

namespace dms::serve {
namespace {

using nlohmann::json;

void expect_envelope(const json& j, const char* object, const std::string& id, int64_t created) {
  EXPECT_EQ(j.at("object"), object);
  EXPECT_EQ(j.at("id"), id);
  EXPECT_EQ(j.at("created"), created);
  EXPECT_EQ(j.at("model"), "m");
}

TEST(Response, ChatCompletion) {
  const std::vector<Choice> choices = {{"Paris.", "stop"}, {"The capital is", "length"}};
  const json j = completion_response(Endpoint::Chat, "chatcmpl-1", 1700000000, "m", choices, {12, 7});
  expect_envelope(j, "chat.completion", "chatcmpl-1", 1700000000);
  ASSERT_EQ(j.at("choices").size(), 2u);
  for (size_t i = 0; i < choices.size(); ++i) {
    const json& c = j["choices"][i];
    EXPECT_EQ(c.at("index"), i);
    EXPECT_EQ(c.at("message"), (json{{"role", "assistant"}, {"content", choices[i].text}}));
    EXPECT_EQ(c.at("finish_reason"), choices[i].finish_reason);
    EXPECT_TRUE(c.at("logprobs").is_null());
    EXPECT_FALSE(c.contains("text"));
  }
  EXPECT_EQ(j.at("usage"), (json{{"prompt_tokens", 12},
                                 {"completion_tokens", 7},
                                 {"total_tokens", 19},
                                 {"prompt_tokens_details", {{"cached_tokens", 0}}}}));
}

TEST(Response, TextCompletion) {
  const json j = completion_response(Endpoint::Completions, "cmpl-9", 5, "m", {{" upon a time", ""}}, {4, 3, 2});
  expect_envelope(j, "text_completion", "cmpl-9", 5);
  ASSERT_EQ(j.at("choices").size(), 1u);
  const json& c = j["choices"][0];
  EXPECT_EQ(c.at("index"), 0);
  EXPECT_EQ(c.at("text"), " upon a time");
  EXPECT_TRUE(c.at("finish_reason").is_null());  // no reason yet is null, not ""
  EXPECT_FALSE(c.contains("message"));
  EXPECT_EQ(j.at("usage").at("total_tokens"), 7);
  EXPECT_EQ(j.at("usage").at("prompt_tokens_details"), (json{{"cached_tokens", 2}}));
}

TEST(Response, ChatStreamChunks) {
  const json role = stream_chunk(Endpoint::Chat, "c", 3, "m", 1, "", "", true, false);
  expect_envelope(role, "chat.completion.chunk", "c", 3);
  ASSERT_EQ(role.at("choices").size(), 1u);
  EXPECT_EQ(role["choices"][0].at("index"), 1);
  EXPECT_EQ(role["choices"][0].at("delta"), (json{{"role", "assistant"}, {"content", ""}}));
  EXPECT_TRUE(role["choices"][0].at("finish_reason").is_null());
  EXPECT_FALSE(role.contains("usage"));

  const json text = stream_chunk(Endpoint::Chat, "c", 3, "m", 0, "Hel", "", false, true);
  EXPECT_EQ(text["choices"][0].at("delta"), (json{{"content", "Hel"}}));
  EXPECT_TRUE(text.at("usage").is_null());  // include_usage: present and null until the last chunk

  const json end = stream_chunk(Endpoint::Chat, "c", 3, "m", 0, "", "stop", false, false);
  EXPECT_EQ(end["choices"][0].at("delta"), json::object());
  EXPECT_EQ(end["choices"][0].at("finish_reason"), "stop");
}

TEST(Response, CompletionStreamChunksAndUsage) {
  const json text = stream_chunk(Endpoint::Completions, "x", 8, "m", 2, " time", "", false, false);
  expect_envelope(text, "text_completion", "x", 8);
  EXPECT_EQ(text["choices"][0].at("index"), 2);
  EXPECT_EQ(text["choices"][0].at("text"), " time");
  EXPECT_FALSE(text["choices"][0].contains("delta"));
  const json end = stream_chunk(Endpoint::Completions, "x", 8, "m", 2, "", "length", false, true);
  EXPECT_EQ(end["choices"][0].at("text"), "");
  EXPECT_EQ(end["choices"][0].at("finish_reason"), "length");

  for (Endpoint e : {Endpoint::Chat, Endpoint::Completions}) {
    const json u = usage_chunk(e, "x", 8, "m", {30, 12});
    expect_envelope(u, e == Endpoint::Chat ? "chat.completion.chunk" : "text_completion", "x", 8);
    EXPECT_EQ(u.at("choices"), json::array());
    EXPECT_EQ(u.at("usage"), (json{{"prompt_tokens", 30},
                                   {"completion_tokens", 12},
                                   {"total_tokens", 42},
                                   {"prompt_tokens_details", {{"cached_tokens", 0}}}}));
  }
}

TEST(Response, ErrorBodies) {
  const json field = error_body(ApiError(400, "n: must be between 1 and 4, got 9", "n"));
  EXPECT_EQ(field, (json{{"error",
                          {{"message", "n: must be between 1 and 4, got 9"},
                           {"type", "invalid_request_error"},
                           {"param", "n"},
                           {"code", 400}}}}));
  const json no_param = error_body(ApiError(401, "invalid API key"));
  EXPECT_TRUE(no_param["error"].at("param").is_null());
  EXPECT_EQ(no_param["error"].at("type"), "authentication_error");
  EXPECT_EQ(error_body(ApiError(404, "x"))["error"]["type"], "not_found_error");
  EXPECT_EQ(error_body(ApiError(413, "x"))["error"]["type"], "invalid_request_error");
  EXPECT_EQ(error_body(ApiError(500, "x"))["error"]["type"], "server_error");
  EXPECT_EQ(error_body(ApiError(503, "x"))["error"]["type"], "service_unavailable");
  EXPECT_EQ(error_body(ApiError(404, "x", "model", "model_not_found"))["error"]["type"], "model_not_found");
}

TEST(Response, FinishReasons) {
  EXPECT_EQ(finish_reason("stop token"), "stop");
  EXPECT_EQ(finish_reason("stop string"), "stop");
  EXPECT_EQ(finish_reason("aborted"), "abort");
  EXPECT_EQ(finish_reason("max tokens"), "length");
  EXPECT_EQ(finish_reason("context length"), "length");
  EXPECT_EQ(finish_reason("kv cache full"), "length");
}

}  // namespace
}  // namespace dms::serve
