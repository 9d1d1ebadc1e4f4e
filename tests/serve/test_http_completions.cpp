// HttpServer end to end over loopback with the fake generator: chat and completions, whole and
// streamed, several choices, and the jobs the server hands the generator.
#include <algorithm>
#include <ctime>

#include "serve_test_model.h"
#include "server_fixture.h"

namespace dms::serve {
namespace {

using test::body_of;
using test::fake_text;
using test::json;
using test::parse_sse;
using test::test_model;
using test::wait_until;

class Completions : public test::ServerTest {};

// The chat prompt as the model sees it: the template's text, encoded without an added BOS.
std::vector<int32_t> chat_ids(const std::vector<ChatMessage>& messages) {
  const test::TestModel& m = test_model();
  return m.tokenizer->encode(m.chat_template.render(messages, true), false);
}

TEST_F(Completions, ChatWhole) {
  start();
  const std::vector<int32_t> prompt = chat_ids({{"user", "Name three rivers."}});
  const int32_t eos = *test_model().tokenizer->eos_id();
  ASSERT_EQ(std::find(prompt.begin(), prompt.begin() + 6, eos), prompt.begin() + 6);  // no early stop
  const int64_t before = std::time(nullptr);
  const auto r = post("/v1/chat/completions", {{"model", kModelName},
                                               {"messages", {{{"role", "user"}, {"content", "Name three rivers."}}}},
                                               {"max_tokens", 6},
                                               {"temperature", 0.5},
                                               {"seed", 11},
                                               {"stop", "THE END"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  const json j = body_of(r);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u) << j["id"];
  EXPECT_EQ(j["model"], kModelName);
  EXPECT_GE(j["created"].get<int64_t>(), before);
  EXPECT_LE(j["created"].get<int64_t>(), std::time(nullptr));
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["message"], (json{{"role", "assistant"}, {"content", fake_text(0, prompt, 6)}}));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"], (json{{"prompt_tokens", prompt.size()},
                              {"completion_tokens", 6},
                              {"total_tokens", prompt.size() + 6},
                              {"prompt_tokens_details", {{"cached_tokens", 0}}}}));

  // What the generator was given.
  const auto jobs = fake_->submitted();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].id, j["id"].get<std::string>() + "#0");
  EXPECT_EQ(jobs[0].prompt, prompt);
  EXPECT_EQ(jobs[0].max_tokens, 6);
  EXPECT_EQ(jobs[0].sampling.temperature, 0.5);
  EXPECT_EQ(jobs[0].sampling.seed, 11u);
  EXPECT_EQ(jobs[0].stop_strings, (std::vector<std::string>{"<|im_end|>", "THE END"}));
  EXPECT_EQ(jobs[0].stop_ids, std::vector<int32_t>{eos});
}

TEST_F(Completions, TextWholeFromTokenIds) {
  start();
  const auto r = post("/v1/completions", {{"prompt", {101, 202, 303}}, {"max_tokens", 5}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  const json j = body_of(r);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("cmpl-", 0), 0u) << j["id"];
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["text"], "[0] 101 202 303 101 202");  // the ids as words, cycling
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"], (json{{"prompt_tokens", 3},
                              {"completion_tokens", 5},
                              {"total_tokens", 8},
                              {"prompt_tokens_details", {{"cached_tokens", 0}}}}));
}

TEST_F(Completions, DefaultMaxTokensIsTheRestOfTheContext) {
  start(ServerOptions{}, 64, std::chrono::milliseconds(0));
  const auto r = post("/v1/completions", {{"prompt", {5, 6, 7, 8}}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(body_of(r)["usage"]["completion_tokens"], kContext - 4);
  EXPECT_EQ(fake_->submitted().at(0).max_tokens, kContext - 4);
}

TEST_F(Completions, StopTokenAndIgnoreEos) {
  start();
  const int32_t eos = *test_model().tokenizer->eos_id();
  // The fake stops where the next id would be EOS: after "101".
  auto r = post("/v1/completions", {{"prompt", {101, eos, 303}}, {"max_tokens", 5}});
  ASSERT_TRUE(r);
  json j = body_of(r);
  EXPECT_EQ(j["choices"][0]["text"], "[0] 101");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["completion_tokens"], 1);
  // ignore_eos: no stop ids reach the generator.
  r = post("/v1/completions", {{"prompt", {101, eos, 303}}, {"max_tokens", 4}, {"ignore_eos", true}});
  ASSERT_TRUE(r);
  j = body_of(r);
  EXPECT_EQ(j["choices"][0]["text"], "[0] 101 " + std::to_string(eos) + " 303 101");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
}

TEST_F(Completions, SeveralChoices) {
  start();
  const auto r = post("/v1/completions", {{"prompt", {7, 8}}, {"max_tokens", 4}, {"n", 3}, {"seed", 5}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  const json j = body_of(r);
  ASSERT_EQ(j["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    EXPECT_EQ(j["choices"][i]["text"], std::string("[") + std::to_string(i) + "] 7 8 7 8");
    EXPECT_EQ(j["choices"][i]["finish_reason"], "length");
  }
  // The prompt counts once, the choices' tokens add up.
  EXPECT_EQ(j["usage"], (json{{"prompt_tokens", 2},
                              {"completion_tokens", 12},
                              {"total_tokens", 14},
                              {"prompt_tokens_details", {{"cached_tokens", 0}}}}));
  // One job per choice, seeds seed, seed + 1, ... so each draws differently and repeats.
  const auto jobs = fake_->submitted();
  ASSERT_EQ(jobs.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(jobs[i].index, i);
    EXPECT_EQ(jobs[i].sampling.seed, 5u + i);
    EXPECT_EQ(jobs[i].channel, jobs[0].channel);  // one request, one channel
  }
  // Without a seed the server draws one, still distinct per choice.
  ASSERT_TRUE(post("/v1/completions", {{"prompt", {7}}, {"max_tokens", 1}, {"n", 2}}));
  const auto more = fake_->submitted();
  ASSERT_EQ(more.size(), 5u);
  ASSERT_TRUE(more[3].sampling.seed && more[4].sampling.seed);
  EXPECT_EQ(*more[4].sampling.seed, *more[3].sampling.seed + 1);
}

TEST_F(Completions, ChatStreamWithUsage) {
  start();
  const std::vector<ChatMessage> messages = {{"system", "Be terse."}, {"user", "Count."}};
  const std::vector<int32_t> prompt = chat_ids(messages);
  const int64_t max_tokens = 7;
  const auto r = post("/v1/chat/completions",
                      {{"messages", {{{"role", "system"}, {"content", "Be terse."}}, {{"role", "user"}, {"content", "Count."}}}},
                       {"max_tokens", max_tokens},
                       {"n", 2},
                       {"stream", true},
                       {"stream_options", {{"include_usage", true}}}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  const test::Sse sse = parse_sse(r->body);
  for (const auto& e : sse.errors) ADD_FAILURE() << e;
  EXPECT_TRUE(sse.done) << "no data: [DONE]";
  ASSERT_GE(sse.events.size(), 3u);

  // First the role of each choice, then text, then one finish chunk per choice.
  const std::string id = sse.events[0]["id"];
  EXPECT_EQ(id.rfind("chatcmpl-", 0), 0u);
  for (int i = 0; i < 2; ++i) {
    const json& c = sse.events[i]["choices"][0];
    EXPECT_EQ(c["index"], i);
    EXPECT_EQ(c["delta"], (json{{"role", "assistant"}, {"content", ""}}));
  }
  std::vector<std::string> text(2);
  std::vector<int> finishes(2);
  for (size_t k = 0; k + 1 < sse.events.size(); ++k) {
    const json& e = sse.events[k];
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    EXPECT_EQ(e["id"], id);
    EXPECT_EQ(e["model"], kModelName);
    EXPECT_TRUE(e.contains("usage") && e["usage"].is_null()) << e;  // include_usage: null until the end
    ASSERT_EQ(e["choices"].size(), 1u) << e;
    const json& c = e["choices"][0];
    const int index = c["index"];
    ASSERT_TRUE(index == 0 || index == 1) << e;
    if (k >= 2) {
      EXPECT_FALSE(c["delta"].contains("role")) << e;
    }
    if (c["finish_reason"].is_null()) {
      EXPECT_EQ(finishes[index], 0) << "text after the finish: " << e;
      text[index] += c["delta"].value("content", "");
    } else {
      EXPECT_EQ(c["finish_reason"], "length");
      EXPECT_EQ(c["delta"], json::object());
      ++finishes[index];
    }
  }
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(text[i], fake_text(i, prompt, max_tokens));
    EXPECT_EQ(finishes[i], 1);
  }
  const json& usage = sse.events.back();
  EXPECT_EQ(usage["choices"], json::array());
  EXPECT_EQ(usage["id"], id);
  EXPECT_EQ(usage["usage"], (json{{"prompt_tokens", prompt.size()},
                                  {"completion_tokens", 2 * max_tokens},
                                  {"total_tokens", prompt.size() + 2 * max_tokens},
                                  {"prompt_tokens_details", {{"cached_tokens", 0}}}}));
  EXPECT_TRUE(wait_until([&] { return server_->open_streams() == 0; }, std::chrono::seconds(5)));
}

TEST_F(Completions, TextStreamWithoutUsage) {
  start();
  const auto r = post("/v1/completions", {{"prompt", {11, 12, 13}}, {"max_tokens", 9}, {"stream", true}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  const test::Sse sse = parse_sse(r->body);
  for (const auto& e : sse.errors) ADD_FAILURE() << e;
  EXPECT_TRUE(sse.done);
  ASSERT_GE(sse.events.size(), 2u);
  std::string text;
  for (size_t k = 0; k + 1 < sse.events.size(); ++k) {
    const json& e = sse.events[k];
    EXPECT_EQ(e["object"], "text_completion");
    EXPECT_FALSE(e.contains("usage")) << e;
    EXPECT_TRUE(e["choices"][0]["finish_reason"].is_null()) << e;
    text += e["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(text, "[0] 11 12 13 11 12 13 11 12 13");
  // The last event ends the choice; no usage chunk was asked for.
  const json& last = sse.events.back();
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(last["choices"][0]["text"], "");
  EXPECT_FALSE(last.contains("usage"));
}

TEST_F(Completions, ModelsTokenizeDetokenize) {
  start();
  auto r = get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(body_of(r), (json{{"object", "list"},
                              {"data",
                               {{{"id", kModelName},
                                 {"object", "model"},
                                 {"created", 0},
                                 {"owned_by", "dms"},
                                 {"max_model_len", kContext}}}}}));

  const std::string text = "Round trip: ümlauts, 42 and <|im_end|>.";
  const Tokenizer& tok = *test_model().tokenizer;
  r = post("/tokenize", {{"prompt", text}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  const json t = body_of(r);
  EXPECT_EQ(t["tokens"], json(tok.encode(text, tok.add_bos_default())));
  EXPECT_EQ(t["count"], t["tokens"].size());
  EXPECT_EQ(t["max_model_len"], kContext);
  r = post("/detokenize", {{"tokens", t["tokens"]}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(body_of(r), (json{{"prompt", text}}));

  r = post("/tokenize", {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}});
  ASSERT_TRUE(r);
  EXPECT_EQ(body_of(r)["tokens"], json(chat_ids({{"user", "Hi"}})));
}

}  // namespace
}  // namespace dms::serve
