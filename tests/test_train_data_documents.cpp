// Reading training documents with the default model's tokenizer and chat template: what each
// format becomes (against Tokenizer::encode and ChatTemplate::render called directly), the split
// key, and every kind of bad input with the error that names it.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>

#include "dms/train/data_documents.h"
#include "dms/util/error.h"
#include "test_train_data_util.h"

namespace dms::test {
namespace {

namespace fs = std::filesystem;

TEST(TrainDataDocuments, TextRecordsEncodeAsAPromptDoes) {
  const TokenizerFixture& t = TokenizerFixture::get();
  TempDir dir;
  std::mt19937_64 rng(1);
  std::vector<std::string> texts;
  std::string jsonl;
  for (int i = 0; i < 20; ++i) {
    texts.push_back(random_text(rng, 1 + i * 7));
    jsonl += nlohmann::json{{"text", texts.back()}, {"note", i}}.dump() + "\n";
    if (i % 6 == 0) jsonl += "   \n";  // blank lines are skipped
  }
  const std::string path = dir.write("corpus.jsonl", jsonl);
  const auto docs = read_documents({path}, *t.tokenizer, t.chat_template);
  ASSERT_EQ(docs.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(docs[i].tokens, t.tokenizer->encode(texts[i], t.tokenizer->add_bos_default())) << i;
    EXPECT_EQ(docs[i].split_key, texts[i]) << "a record without an id splits by its content";
    EXPECT_NE(docs[i].origin.find("corpus.jsonl:"), std::string::npos) << docs[i].origin;
  }
}

TEST(TrainDataDocuments, ConversationsEncodeAsTheChatTemplateRendersThem) {
  const TokenizerFixture& t = TokenizerFixture::get();
  TempDir dir;
  std::mt19937_64 rng(2);
  std::vector<std::vector<ChatMessage>> chats;
  std::string jsonl;
  for (int i = 0; i < 15; ++i) {
    std::vector<ChatMessage> chat;
    if (i % 3 == 0) chat.push_back({"system", random_text(rng, 12)});
    const int turns = 1 + i % 4;
    for (int k = 0; k < turns; ++k) {
      chat.push_back({"user", random_text(rng, 5 + 3 * k)});
      if (k + 1 < turns || i % 2 == 0) chat.push_back({"assistant", random_text(rng, 20 + k)});
    }
    nlohmann::json messages = nlohmann::json::array();
    // Fields in either order, plus fields the reader ignores.
    for (const auto& m : chat) messages.push_back({{"content", m.content}, {"role", m.role}, {"name", "x"}});
    jsonl += nlohmann::json{{"messages", messages}, {"id", "conv-" + std::to_string(i)}}.dump() + "\n";
    chats.push_back(std::move(chat));
  }
  const std::string path = dir.write("chats.jsonl", jsonl);
  const auto docs = read_documents({path}, *t.tokenizer, t.chat_template);
  ASSERT_EQ(docs.size(), chats.size());
  for (size_t i = 0; i < chats.size(); ++i) {
    EXPECT_EQ(docs[i].tokens, t.tokenizer->encode(t.chat_template.render(chats[i], false), false)) << i;
    EXPECT_EQ(docs[i].split_key, "conv-" + std::to_string(i)) << "the id decides the split";
  }
}

TEST(TrainDataDocuments, ATextFileIsOneDocumentAndADirectoryItsFilesInNameOrder) {
  const TokenizerFixture& t = TokenizerFixture::get();
  TempDir dir;
  std::mt19937_64 rng(3);
  const std::string a = random_text(rng, 40) + "\n\n" + random_text(rng, 30) + "\n";
  const std::string b = random_text(rng, 25);
  const std::string c = random_text(rng, 10);
  dir.write("data/b.txt", b);
  dir.write("data/a.md", a);
  dir.write("data/.hidden", "not data");
  dir.write("data/c.jsonl", nlohmann::json{{"text", c}, {"id", 42}}.dump() + "\n");
  const auto docs = read_documents({dir.path("data")}, *t.tokenizer, t.chat_template);
  ASSERT_EQ(docs.size(), 3u);
  const bool bos = t.tokenizer->add_bos_default();
  EXPECT_EQ(docs[0].tokens, t.tokenizer->encode(a, bos)) << "blank lines do not split a text file";
  EXPECT_EQ(docs[1].tokens, t.tokenizer->encode(b, bos));
  EXPECT_EQ(docs[2].tokens, t.tokenizer->encode(c, bos));
  EXPECT_EQ(docs[0].split_key, a);
  EXPECT_EQ(docs[2].split_key, "42");
}

struct BadInput {
  std::string name;
  std::string content;
  std::vector<std::string> mentions;
};

void PrintTo(const BadInput& c, std::ostream* os) { *os << c.name; }

const std::string kOk = R"({"text": "fine"})";

const std::vector<BadInput> kBadInputs = {
    {"empty.jsonl", "", {"empty.jsonl", "empty file"}},
    {"blank.jsonl", "\n  \n\n", {"blank.jsonl", "empty file"}},
    {"empty.txt", "", {"empty.txt", "empty file"}},
    {"whitespace.txt", " \n\t\n", {"whitespace.txt", "empty file"}},
    {"malformed.jsonl", kOk + "\n" + kOk + "\n{\"text\": \"unterminated\n", {"malformed.jsonl:3", "malformed JSON"}},
    {"not_object.jsonl", "[1, 2]\n", {"not_object.jsonl:1", "expected a JSON object", "array"}},
    {"neither.jsonl", kOk + "\n{\"prompt\": \"hello\"}\n", {"neither.jsonl:2", "neither 'text' nor 'messages'"}},
    {"both.jsonl", R"({"text": "a", "messages": [{"role": "user", "content": "b"}]})", {"both.jsonl:1", "both"}},
    {"text_number.jsonl", R"({"text": 5})", {"text_number.jsonl:1", "'text' must be a string"}},
    {"text_empty.jsonl", R"({"text": ""})", {"text_empty.jsonl:1", "'text' is empty"}},
    {"messages_object.jsonl", R"({"messages": {"role": "user"}})", {"messages_object.jsonl:1", "'messages' must be a non-empty list"}},
    {"messages_empty.jsonl", R"({"messages": []})", {"messages_empty.jsonl:1", "'messages' must be a non-empty list"}},
    {"message_string.jsonl", R"({"messages": ["hello"]})", {"message_string.jsonl:1", "messages[0] must be an object"}},
    {"bad_role.jsonl", R"({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]})",
     {"bad_role.jsonl:1", "messages[1].role 'bot' is not one of system, user, assistant"}},
    {"no_role.jsonl", R"({"messages": [{"content": "hi"}]})", {"no_role.jsonl:1", "messages[0].role must be a string"}},
    {"no_content.jsonl", R"({"messages": [{"role": "user"}]})", {"no_content.jsonl:1", "messages[0].content must be a string"}},
    {"content_list.jsonl", R"({"messages": [{"role": "user", "content": ["a"]}]})", {"content_list.jsonl:1", "messages[0].content"}},
    {"float_id.jsonl", R"({"text": "a", "id": 1.5})", {"float_id.jsonl:1", "'id' must be a string or an integer"}},
    {"latin1.txt", "caf\xe9 au lait", {"latin1.txt", "UTF-8"}},
};

class TrainDataBadInput : public ::testing::TestWithParam<BadInput> {};

TEST_P(TrainDataBadInput, FailsWithAnErrorNamingFileLineAndField) {
  const TokenizerFixture& t = TokenizerFixture::get();
  TempDir dir;
  const std::string path = dir.write(GetParam().name, GetParam().content);
  try {
    read_documents({path}, *t.tokenizer, t.chat_template);
    FAIL() << "reading " << GetParam().name << " succeeded";
  } catch (const Error& e) {
    for (const auto& m : GetParam().mentions)
      EXPECT_NE(std::string(e.what()).find(m), std::string::npos) << "error does not mention '" << m << "': " << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Reader, TrainDataBadInput, ::testing::ValuesIn(kBadInputs), [](const auto& info) {
  std::string name = info.param.name;
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
});

TEST(TrainDataDocuments, MissingPathsAndEmptyDirectoriesAreNamed) {
  const TokenizerFixture& t = TokenizerFixture::get();
  TempDir dir;
  fs::create_directories(dir.path("nothing"));
  for (const std::string& path : {dir.path("absent.jsonl"), dir.path("nothing")}) {
    try {
      read_documents({path}, *t.tokenizer, t.chat_template);
      FAIL() << path;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
}

TEST(TrainDataDocuments, HeldOutSplitIsStableMonotoneAndNearItsFraction) {
  std::mt19937_64 rng(4);
  std::vector<std::string> keys;
  for (int i = 0; i < 20000; ++i) keys.push_back("doc-" + std::to_string(rng()));
  for (double f : {0.01, 0.1, 0.5}) {
    int64_t held = 0;
    for (const auto& k : keys) {
      const bool h = in_heldout_split(k, f);
      held += h;
      EXPECT_EQ(h, in_heldout_split(std::string(k), f)) << "the same key, another string object";
      if (h) EXPECT_TRUE(in_heldout_split(k, f + 0.05)) << "a larger share must keep what a smaller one held out";
    }
    // Binomial: five standard deviations.
    const double n = static_cast<double>(keys.size());
    EXPECT_NEAR(static_cast<double>(held) / n, f, 5 * std::sqrt(f * (1 - f) / n)) << f;
  }
  for (const auto& k : keys) EXPECT_FALSE(in_heldout_split(k, 0.0));
}

}  // namespace
}  // namespace dms::test
