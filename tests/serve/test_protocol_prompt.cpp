// prepare_prompt, parse_tokenize and parse_detokenize with the default model's real tokenizer and
// ChatML template: what the prompt encodes to, its fit in the context, and the stop conditions.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "dms/serve/protocol.h"
#include "serve_test_model.h"

namespace dms::serve {
namespace {

using nlohmann::json;
using test::expect_api_error;
using test::served_model;
using test::test_model;

constexpr int64_t kContext = 64;

PreparedPrompt prepare(const json& body, Endpoint endpoint, int64_t context = kContext) {
  return prepare_prompt(parse_completion_request(body.dump(), endpoint, 4), served_model(context));
}

// The ids 101, 102, ..., 100 + n: ordinary vocabulary entries, a prompt of exactly n tokens.
std::vector<int32_t> ids_of_length(int64_t n) {
  std::vector<int32_t> ids;
  for (int64_t i = 1; i <= n; ++i) ids.push_back(static_cast<int32_t>(100 + i));
  return ids;
}

TEST(PreparePrompt, ChatGoesThroughTheTemplate) {
  const Tokenizer& tok = *test_model().tokenizer;
  const PreparedPrompt p =
      prepare({{"messages", {{{"role", "user"}, {"content", "What is 2+2?"}}}}, {"stop", "Done"}}, Endpoint::Chat);
  const std::string text = tok.decode(p.ids);
  // ChatML with SmolLM2's default system message, written out by hand.
  EXPECT_EQ(text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
  // The turn end stops generation, then the request's own stops; EOS as a stop id.
  EXPECT_EQ(p.stop_strings, (std::vector<std::string>{"<|im_end|>", "Done"}));
  EXPECT_EQ(p.stop_ids, std::vector<int32_t>{*tok.token_id("<|im_end|>")});
  EXPECT_EQ(p.max_tokens, kContext - static_cast<int64_t>(p.ids.size()));
}

// Where the prefix cache should keep a chat prompt's state: after the first message and after all
// but the last, as token counts, each checked against the text written out by hand.
TEST(PreparePrompt, ChatCachePointsAreWhereMessagesEnd) {
  const Tokenizer& tok = *test_model().tokenizer;
  const json system = {{"role", "system"}, {"content", "Be brief."}};
  const json user = {{"role", "user"}, {"content", "Hi"}};
  const json assistant = {{"role", "assistant"}, {"content", "Hello!"}};
  const json again = {{"role", "user"}, {"content", "Bye"}};
  const auto decoded_up_to = [&](const PreparedPrompt& p, int64_t n) {
    return tok.decode(std::vector<int32_t>(p.ids.begin(), p.ids.begin() + n));
  };
  const PreparedPrompt conversation = prepare({{"messages", {system, user, assistant, again}}}, Endpoint::Chat, 256);
  ASSERT_EQ(conversation.cache_points.size(), 2u);
  EXPECT_EQ(decoded_up_to(conversation, conversation.cache_points[0]), "<|im_start|>system\nBe brief.<|im_end|>\n");
  EXPECT_EQ(decoded_up_to(conversation, conversation.cache_points[1]),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n");
  const PreparedPrompt two = prepare({{"messages", {system, user}}}, Endpoint::Chat);
  ASSERT_EQ(two.cache_points.size(), 1u);
  EXPECT_EQ(decoded_up_to(two, two.cache_points[0]), "<|im_start|>system\nBe brief.<|im_end|>\n");
  EXPECT_TRUE(prepare({{"messages", {user}}}, Endpoint::Chat).cache_points.empty());
  EXPECT_TRUE(prepare({{"prompt", "Once upon a time"}}, Endpoint::Completions).cache_points.empty());
}

TEST(PreparePrompt, DeveloperRoleAndContentPartsAreTheirPlainForms) {
  const Tokenizer& tok = *test_model().tokenizer;
  const PreparedPrompt developer = prepare({{"messages",
                                             {{{"role", "developer"}, {"content", "Answer in French."}},
                                              {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "Bon"}},
                                                                              {{"type", "text"}, {"text", "jour"}}}}}}}},
                                           Endpoint::Chat);
  const PreparedPrompt plain = prepare({{"messages",
                                         {{{"role", "system"}, {"content", "Answer in French."}},
                                          {{"role", "user"}, {"content", "Bonjour"}}}}},
                                       Endpoint::Chat);
  EXPECT_EQ(developer.ids, plain.ids);
  // A system message of the client's replaces the template's default one.
  EXPECT_EQ(tok.decode(plain.ids),
            "<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\nBonjour<|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(PreparePrompt, CompletionTextAndTokenIds) {
  const Tokenizer& tok = *test_model().tokenizer;
  const std::string text = "The quick brown fox jumps over the lazy dog.";
  const PreparedPrompt p = prepare({{"prompt", text}, {"stop", {"\n"}}}, Endpoint::Completions);
  EXPECT_EQ(p.ids, tok.encode(text, tok.add_bos_default()));
  EXPECT_EQ(tok.decode(p.ids, true), text);
  EXPECT_GT(p.ids.size(), 5u);
  EXPECT_EQ(p.max_tokens, kContext - static_cast<int64_t>(p.ids.size()));
  EXPECT_EQ(p.stop_strings, std::vector<std::string>{"\n"});  // no template: only the request's

  const PreparedPrompt ids = prepare({{"prompt", {{7, 8, 9}}}, {"max_tokens", 10}}, Endpoint::Completions);
  EXPECT_EQ(ids.ids, (std::vector<int32_t>{7, 8, 9}));
  EXPECT_EQ(ids.max_tokens, 10);
  EXPECT_TRUE(ids.stop_strings.empty());
  EXPECT_EQ(ids.stop_ids, std::vector<int32_t>{*tok.eos_id()});
  EXPECT_TRUE(prepare({{"prompt", {7, 8, 9}}, {"ignore_eos", true}}, Endpoint::Completions).stop_ids.empty());
}

TEST(PreparePrompt, ContextLimits) {
  // The prompt alone must leave room for one generated token.
  const json fits = {{"prompt", ids_of_length(kContext - 1)}};
  EXPECT_EQ(prepare(fits, Endpoint::Completions).max_tokens, 1);
  expect_api_error([&] { prepare({{"prompt", ids_of_length(kContext)}}, Endpoint::Completions); }, 400, "prompt",
                   {"the prompt has 64 tokens", "context length is 64"});

  // Prompt plus max_tokens: 40 + 24 fits 64 exactly, 40 + 25 does not.
  json body = {{"prompt", ids_of_length(40)}, {"max_tokens", 24}};
  EXPECT_EQ(prepare(body, Endpoint::Completions).max_tokens, 24);
  body["max_tokens"] = 25;
  expect_api_error([&] { prepare(body, Endpoint::Completions); }, 400, "max_tokens",
                   {"prompt (40 tokens) plus max_tokens (25) exceeds the model's context length of 64"});

  // A text prompt and a conversation too long for the context name their own field.
  std::string long_text;
  for (int i = 0; i < 40; ++i) long_text += "word" + std::to_string(i) + " ";
  ASSERT_GE(test_model().tokenizer->encode(long_text, false).size(), static_cast<size_t>(kContext));
  expect_api_error([&] { prepare({{"prompt", long_text}}, Endpoint::Completions); }, 400, "prompt",
                   {"context length is 64"});
  expect_api_error([&] { prepare({{"messages", {{{"role", "user"}, {"content", long_text}}}}}, Endpoint::Chat); }, 400,
                   "messages", {"context length is 64"});
}

TEST(PreparePrompt, TokenIdsOutsideTheVocabulary) {
  const int32_t vocab = test_model().tokenizer->vocab_size();
  ASSERT_GT(vocab, 1000);
  EXPECT_NO_THROW(prepare({{"prompt", {0, vocab - 1}}}, Endpoint::Completions));
  expect_api_error([&] { prepare({{"prompt", {5, vocab}}}, Endpoint::Completions); }, 400, "prompt[1]",
                   {"token id " + std::to_string(vocab) + " is outside the vocabulary of " + std::to_string(vocab)});
}

TEST(PreparePrompt, TextThatEncodesToNothingOrIsNotUtf8) {
  const Tokenizer& tok = *test_model().tokenizer;
  ASSERT_FALSE(tok.add_bos_default());  // SmolLM2: an empty text is no tokens at all
  expect_api_error([&] { prepare({{"prompt", ""}}, Endpoint::Completions); }, 400, "prompt", {"encodes to no tokens"});
  // nlohmann refuses to dump invalid UTF-8, so the request is parsed and then given the bytes.
  CompletionRequest r = parse_completion_request(R"({"prompt": "x"})", Endpoint::Completions, 1);
  r.prompt = "caf\xc3";
  expect_api_error([&] { prepare_prompt(r, served_model(kContext)); }, 400, "prompt", {"prompt: "});
}

TEST(Tokenize, PromptAndMessages) {
  const ServedModel model = served_model(kContext);
  const Tokenizer& tok = *test_model().tokenizer;
  const std::string text = "Tokenize me, please: 12345!";
  const std::vector<int32_t> ids = parse_tokenize(json{{"prompt", text}}.dump(), model);
  EXPECT_EQ(ids, tok.encode(text, tok.add_bos_default()));
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_EQ(parse_tokenize(json{{"prompt", text}, {"add_special_tokens", false}}.dump(), model),
            tok.encode(text, false));
  // Special tokens written in the text are recognised as such: one id for <|im_end|>.
  const std::vector<int32_t> special = parse_tokenize(json{{"prompt", "<|im_end|>"}}.dump(), model);
  EXPECT_EQ(special, std::vector<int32_t>{*tok.token_id("<|im_end|>")});

  const std::vector<int32_t> chat =
      parse_tokenize(json{{"messages", {{{"role", "system"}, {"content", "S"}}, {{"role", "user"}, {"content", "Hi"}}}}}
                         .dump(),
                     model);
  EXPECT_EQ(tok.decode(chat), "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(Tokenize, Errors) {
  const ServedModel model = served_model(kContext);
  const auto tokenize = [&](const std::string& body) { return [&model, body] { parse_tokenize(body, model); }; };
  expect_api_error(tokenize("{"), 400, "", {"not valid JSON"});
  expect_api_error(tokenize("[\"x\"]"), 400, "", {"must be a JSON object, got array"});
  expect_api_error(tokenize("{}"), 400, "prompt", {"is required (or messages)"});
  expect_api_error(tokenize(R"({"prompt": 5})"), 400, "prompt", {"expected a string, got number"});
  expect_api_error(tokenize(R"({"prompt": "x", "add_special_tokens": "no"})"), 400, "add_special_tokens",
                   {"expected a boolean"});
  expect_api_error(tokenize(R"({"messages": [{"role": "robot", "content": "x"}]})"), 400, "messages[0].role",
                   {"'robot' is not supported"});
}

TEST(Detokenize, RoundTripAndErrors) {
  const ServedModel model = served_model(kContext);
  const Tokenizer& tok = *test_model().tokenizer;
  const std::string text = "Grüße aus Köln — 3.14 ≈ π";
  const std::vector<int32_t> ids = tok.encode(text, false);
  EXPECT_EQ(parse_detokenize(json{{"tokens", ids}}.dump(), model), text);
  EXPECT_EQ(parse_detokenize(R"({"tokens": []})", model), "");

  const int32_t vocab = tok.vocab_size();
  const auto detokenize = [&](const std::string& body) { return [&model, body] { parse_detokenize(body, model); }; };
  expect_api_error(detokenize("{]"), 400, "", {"not valid JSON"});
  expect_api_error(detokenize("{}"), 400, "tokens", {"is required"});
  expect_api_error(detokenize(R"({"tokens": "1 2"})"), 400, "tokens", {"expected a list of token ids, got string"});
  expect_api_error(detokenize(R"({"tokens": [1, -1]})"), 400, "tokens[1]", {"token id -1 is outside the vocabulary"});
  expect_api_error(detokenize(json{{"tokens", {vocab}}}.dump()), 400, "tokens[0]",
                   {"token id " + std::to_string(vocab) + " is outside the vocabulary of " + std::to_string(vocab)});
  expect_api_error(detokenize(R"({"tokens": [1.5]})"), 400, "tokens[0]", {"expected an integer"});
}

}  // namespace
}  // namespace dms::serve
