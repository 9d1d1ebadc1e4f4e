// Chat templates rendered natively must equal transformers' apply_chat_template output for the
// conversations tests/reference/make_tokenizer_fixtures.py renders.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dms/format/gguf.h"
#include "dms/tokenizer/chat_template.h"
#include "dms/tokenizer/tokenizer.h"

namespace dms {
namespace {

using nlohmann::json;

std::string chat_fixtures() {
  const char* root = std::getenv("DMS_FIXTURES");
  if (root == nullptr) {
    ADD_FAILURE() << "DMS_FIXTURES is not set; run tests/reference/make_tokenizer_fixtures.py <dir> and "
                     "export DMS_FIXTURES=<dir> (scripts/test does both)";
    return {};
  }
  std::string dir = std::string(root) + "/tokenizers";
  if (!std::ifstream(dir + "/chat/smollm2.json")) {
    ADD_FAILURE() << dir << " has no chat template fixtures; run tests/reference/make_tokenizer_fixtures.py";
    return {};
  }
  return dir;
}

json load_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open fixture " + path);
  return json::parse(in);
}

std::vector<ChatMessage> messages_of(const json& j) {
  std::vector<ChatMessage> out;
  for (const auto& m : j) out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  return out;
}

struct Case {
  const char* name;
  ChatTemplate::Family family;
  const char* stop;
};

class ChatTemplateFamily : public ::testing::TestWithParam<Case> {};

TEST_P(ChatTemplateFamily, RendersLikeTransformers) {
  std::string dir = chat_fixtures();
  ASSERT_FALSE(dir.empty());
  const Case c = GetParam();
  json fixture = load_json(dir + "/chat/" + c.name + ".json");
  auto tok = Tokenizer::from_hf_dir(dir + "/" + fixture["tokenizer"].get<std::string>());
  testing::internal::CaptureStderr();
  auto tmpl = ChatTemplate::from_source(fixture["source"].get<std::string>(), *tok);
  std::string warnings = testing::internal::GetCapturedStderr();
  ASSERT_EQ(tmpl.family(), c.family);
  EXPECT_EQ(warnings, "") << "a recognised template must not warn";
  for (const auto& k : fixture["cases"]) {
    SCOPED_TRACE(k["messages"].dump() + (k["add_generation_prompt"].get<bool>() ? " +gen" : ""));
    EXPECT_EQ(tmpl.render(messages_of(k["messages"]), k["add_generation_prompt"].get<bool>()),
              k["expected"].get<std::string>());
  }
  // The turn terminator is a special token of the tokenizer, so generation can stop on it.
  auto stops = tmpl.stop_strings();
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0], c.stop);
  auto id = tok->token_id(stops[0]);
  ASSERT_TRUE(id.has_value());
  EXPECT_TRUE(tok->is_special(*id));
}

INSTANTIATE_TEST_SUITE_P(
    Families, ChatTemplateFamily,
    ::testing::Values(Case{"smollm2", ChatTemplate::Family::ChatML, "<|im_end|>"},
                      Case{"qwen25", ChatTemplate::Family::ChatML, "<|im_end|>"},
                      Case{"qwen3", ChatTemplate::Family::ChatML, "<|im_end|>"},
                      Case{"llama3", ChatTemplate::Family::Llama3, "<|eot_id|>"},
                      Case{"llama31", ChatTemplate::Family::Llama3, "<|eot_id|>"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ChatTemplate, UnknownTemplateWarnsAndFallsBackToPlain) {
  std::string dir = chat_fixtures();
  ASSERT_FALSE(dir.empty());
  json fixture = load_json(dir + "/chat/unknown.json");
  auto tok = Tokenizer::from_hf_dir(dir + "/" + fixture["tokenizer"].get<std::string>());
  testing::internal::CaptureStderr();
  auto tmpl = ChatTemplate::from_source(fixture["source"].get<std::string>(), *tok);
  std::string warnings = testing::internal::GetCapturedStderr();
  EXPECT_EQ(tmpl.family(), ChatTemplate::Family::Plain);
  EXPECT_NE(warnings.find("warning"), std::string::npos);
  // Plain keeps every message, in order.
  for (const auto& k : fixture["cases"]) {
    auto messages = messages_of(k["messages"]);
    std::string out = tmpl.render(messages, k["add_generation_prompt"].get<bool>());
    size_t pos = 0;
    for (const auto& m : messages) {
      size_t hit = out.find(m.content, pos);
      ASSERT_NE(hit, std::string::npos) << m.content;
      pos = hit + m.content.size();
    }
  }
  EXPECT_EQ(tmpl.stop_strings(), std::vector<std::string>{tok->token_text(*tok->eos_id())});
}

TEST(ChatTemplate, DefaultModelTemplateIsSmolLM2ChatML) {
  std::string dir = chat_fixtures();
  ASSERT_FALSE(dir.empty());
  const char* model = std::getenv("DMS_DEFAULT_MODEL");
  ASSERT_NE(model, nullptr) << "DMS_DEFAULT_MODEL is not set (source scripts/env.sh)";
  auto tok = Tokenizer::from_gguf(*GgufFile::open(model));
  auto tmpl = ChatTemplate::from_source(tok->chat_template_source(), *tok);
  ASSERT_EQ(tmpl.family(), ChatTemplate::Family::ChatML);
  json fixture = load_json(dir + "/chat/smollm2.json");
  EXPECT_EQ(tok->chat_template_source(), fixture["source"].get<std::string>());
  for (const auto& k : fixture["cases"]) {
    EXPECT_EQ(tmpl.render(messages_of(k["messages"]), k["add_generation_prompt"].get<bool>()),
              k["expected"].get<std::string>());
  }
}

}  // namespace
}  // namespace dms
