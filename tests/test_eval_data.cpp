// What the evaluation reads and builds: documents from text and JSONL files (against
// transformers' tokenization of the same text), their bad-input errors, and passkey items.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dms/eval/documents.h"
#include "dms/eval/retrieval.h"
#include "dms/train/data_documents.h"
#include "dms/util/error.h"
#include "test_dms_model_fixtures.h"
#include "test_eval_fixtures.h"

namespace dms::eval {
namespace {

using test::eval_fixture;
using test::eval_model;

const Tokenizer& tokenizer() { return *eval_model("tiny").tokenizer; }

using test::error_of;

struct ScratchFile {
  std::string path;
  explicit ScratchFile(const std::string& name, const std::string& text)
      : path((std::filesystem::temp_directory_path() / ("dms_eval_" + std::to_string(::getpid()) + "_" + name)).string()) {
    std::ofstream(path) << text;
  }
  ~ScratchFile() { std::filesystem::remove(path); }
};

// doc.0 of the reference is transformers' first 150 tokens of text.txt.
TEST(Documents, TextIsCutIntoConsecutivePiecesOfContextTokens) {
  const Document ref = test::reference_document(0);
  const auto docs = load_documents(eval_fixture("text.txt"), tokenizer(), {50, 3, "auto", "text", false});
  ASSERT_EQ(docs.size(), 3u);
  for (size_t d = 0; d < 3; ++d)
    EXPECT_EQ(docs[d], Document(ref.begin() + 50 * d, ref.begin() + 50 * (d + 1))) << "document " << d;
}

TEST(Documents, JsonlGivesOneDocumentPerLineCutToContext) {
  std::ifstream in(eval_fixture("docs.jsonl"));
  std::vector<Document> expected;
  for (std::string line; std::getline(in, line);) {
    Document d = tokenizer().encode(nlohmann::json::parse(line)["text"].get<std::string>(), false);
    if (d.size() > 120) d.resize(120);
    expected.push_back(d);
  }
  const auto docs = load_documents(eval_fixture("docs.jsonl"), tokenizer(), {120, 4, "auto", "text", false});
  ASSERT_EQ(docs.size(), 4u);
  for (size_t d = 0; d < 4; ++d) EXPECT_EQ(docs[d], expected[d]);
  const ScratchFile blanks("blanks.jsonl", "\n{\"text\": \"a\"}\n\n{\"text\": \"one two three\"}\n");
  EXPECT_EQ(load_documents(blanks.path, tokenizer(), {120, 4, "auto", "text", false}).size(), 1u)
      << "blank lines and one-token documents are skipped";
}

// A conversation (gen-data's output: "messages" plus other fields) is the document dms retrofit
// trains on: the same tokens as its data reader gives, cut to context.
TEST(Documents, ConversationsAreRenderedAsRetrofitRendersThem) {
  const Model& model = eval_model("tiny");
  const ScratchFile chats("chats.jsonl",
                          R"({"id": "a", "messages": [{"role": "user", "content": "What is 2 + 3? Think step by step."},)"
                          R"( {"role": "assistant", "content": "2 plus 3 is 5, since counting on from 2 gives 3, 4, 5."}]})"
                          "\n"
                          R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."},)"
                          R"( {"role": "assistant", "content": "Blue."}], "reply_tokens": 2})"
                          "\n");
  const std::vector<dms::Document> trained = read_documents({chats.path}, *model.tokenizer, model.chat_template);
  DocumentOptions o{1000, 4, "auto", "messages", false, &model.chat_template};
  const auto docs = load_documents(chats.path, *model.tokenizer, o);
  ASSERT_EQ(docs.size(), 2u);
  for (size_t d = 0; d < 2; ++d) {
    EXPECT_EQ(docs[d], trained[d].tokens) << "document " << d;
    EXPECT_GT(docs[d].size(), 10u);
  }
  o.context = 7;
  EXPECT_EQ(load_documents(chats.path, *model.tokenizer, o)[0], Document(trained[0].tokens.begin(), trained[0].tokens.begin() + 7));
  o.chat_template = nullptr;
  EXPECT_NE(error_of([&] { load_documents(chats.path, *model.tokenizer, o); }).find(chats.path + ":1: \"messages\" is a conversation"),
            std::string::npos);
  const ScratchFile role("role.jsonl", R"({"messages": [{"role": "robot", "content": "beep"}]})" "\n");
  o.chat_template = &model.chat_template;
  EXPECT_NE(error_of([&] { load_documents(role.path, *model.tokenizer, o); }).find(role.path + ":1: messages[0].role 'robot'"),
            std::string::npos);
}

TEST(Documents, BadInputNamesTheFileLineAndField) {
  const DocumentOptions o{64, 4, "auto", "text", false};
  EXPECT_NE(error_of([&] { load_documents("/nonexistent/x.txt", tokenizer(), o); }).find("/nonexistent/x.txt: cannot open"),
            std::string::npos);
  const ScratchFile bad("bad.jsonl", "{\"text\": \"fine words here\"}\n{\"text\": oops}\n");
  EXPECT_NE(error_of([&] { load_documents(bad.path, tokenizer(), o); }).find(bad.path + ":2: not valid JSON"),
            std::string::npos);
  const ScratchFile other("other.jsonl", "{\"body\": \"fine words here\"}\n");
  EXPECT_NE(error_of([&] { load_documents(other.path, tokenizer(), o); }).find(other.path + ":1: no \"text\" member"),
            std::string::npos);
  EXPECT_EQ(load_documents(other.path, tokenizer(), {64, 4, "auto", "body", false}).size(), 1u);
  const ScratchFile number("number.jsonl", "{\"text\": 5}\n");
  EXPECT_NE(error_of([&] { load_documents(number.path, tokenizer(), o); }).find("\"text\" is neither a string nor a list"),
            std::string::npos);
  const ScratchFile array("array.jsonl", "[1, 2]\n");
  EXPECT_NE(error_of([&] { load_documents(array.path, tokenizer(), o); }).find("expected a JSON object"), std::string::npos);
  const ScratchFile empty("empty.txt", "");
  EXPECT_NE(error_of([&] { load_documents(empty.path, tokenizer(), o); }).find("no document of at least 2 tokens"),
            std::string::npos);
  const ScratchFile latin1("latin1.txt", "caf\xe9 au lait\n");
  EXPECT_NE(error_of([&] { load_documents(latin1.path, tokenizer(), o); }).find(latin1.path), std::string::npos);
}

// The filler sentences of an item's prompt, as token counts: the text between the intro and
// the question with the needle taken out, cut after each ". ", each piece tokenized alone (the
// pieces were tokenized separately and joined, so this recovers them).
std::vector<int64_t> filler_sentence_tokens(const RetrievalItem& it, int64_t intro, int64_t question) {
  std::vector<int32_t> filler(it.prompt.begin() + intro, it.prompt.begin() + it.needle_pos);
  filler.insert(filler.end(), it.prompt.begin() + it.needle_pos + it.needle_tokens, it.prompt.end() - question);
  const std::string text = tokenizer().decode(filler);
  std::vector<int64_t> out;
  size_t start = 0;
  for (size_t dot = text.find(". "); start < text.size(); dot = text.find(". ", start)) {
    const size_t end = dot == std::string::npos ? text.size() : dot + 1;
    out.push_back(static_cast<int64_t>(tokenizer().encode(text.substr(start, end - start), false).size()));
    start = end;
  }
  return out;
}

TEST(Retrieval, ItemsHaveTheirLengthAndTheNeedleAtItsDepth) {
  RetrievalOptions o;
  o.lengths = {300, 400};  // room for several filler sentences on the tiny tokenizer
  o.depths = {0.0, 0.5, 1.0};
  o.trials = 2;
  const auto items = make_retrieval_items(tokenizer(), o);
  ASSERT_EQ(items.size(), 12u);
  const std::string question = "\nWhat is the pass key? The pass key is";
  const auto question_tokens = static_cast<int64_t>(tokenizer().encode(question, false).size());
  for (size_t i = 0; i < items.size(); i += 6) {  // per length: depth 0, 0, 0.5, 0.5, 1, 1
    const RetrievalItem& first = items[i];
    EXPECT_EQ(first.answer.size(), 5u);
    EXPECT_NE(items[i].answer, items[i + 1].answer) << "trials use different keys";
    const int64_t intro = items[i].needle_pos;  // depth 0: the needle right after the intro
    for (size_t j = i; j < i + 6; ++j) {
      const RetrievalItem& it = items[j];
      const auto n = static_cast<int64_t>(it.prompt.size());
      const std::vector<int32_t> needle(it.prompt.begin() + it.needle_pos, it.prompt.begin() + it.needle_pos + it.needle_tokens);
      EXPECT_EQ(tokenizer().decode(needle),
                " The pass key is " + it.answer + ". Remember it. " + it.answer + " is the pass key.");
      const std::string text = tokenizer().decode(it.prompt);
      EXPECT_TRUE(text.ends_with(question));
      EXPECT_EQ(text.find(it.answer), text.find("The pass key is " + it.answer) + 16) << "the key appears only in the needle";
      const std::vector<int64_t> sentences = filler_sentence_tokens(it, intro, question_tokens);
      ASSERT_GE(sentences.size(), 3u) << "length " << it.length;
      int64_t filler = 0;
      for (int64_t t : sentences) filler += t;
      EXPECT_EQ(filler, n - intro - it.needle_tokens - question_tokens) << "the filler is whole sentences";
      const int64_t longest = *std::max_element(sentences.begin(), sentences.end());
      EXPECT_LE(n, it.length);
      EXPECT_GT(n, it.length - longest) << "the filler fills the length up to less than a sentence";
      // Depth d: the needle at the sentence boundary nearest d x the filler's tokens, so at most
      // half the longest sentence away from it.
      const double before = static_cast<double>(it.needle_pos - intro);
      EXPECT_LE(std::abs(before - it.depth * static_cast<double>(filler)), 0.5 * static_cast<double>(longest) + 0.5)
          << "length " << it.length << ", depth " << it.depth;
    }
    // Depth 0: right after the intro; 1: right before the question; 0.5: filler on both sides.
    const RetrievalItem& last = items[i + 4];
    const std::vector<int32_t> after(last.prompt.begin() + last.needle_pos + last.needle_tokens, last.prompt.end());
    EXPECT_EQ(tokenizer().decode(after), question);
    const RetrievalItem& mid = items[i + 2];
    EXPECT_GT(mid.needle_pos, intro);
    EXPECT_LT(mid.needle_pos + mid.needle_tokens, static_cast<int64_t>(mid.prompt.size()) - question_tokens);
  }
}

TEST(Retrieval, BadSettingsAreRefused) {
  RetrievalOptions o;
  o.lengths = {60};
  EXPECT_NE(error_of([&] { make_retrieval_items(tokenizer(), o); }).find("length 60 is too short"), std::string::npos);
  o.lengths = {400};
  o.depths = {1.5};
  EXPECT_NE(error_of([&] { make_retrieval_items(tokenizer(), o); }).find("outside [0, 1]"), std::string::npos);
}

}  // namespace
}  // namespace dms::eval
