// Task files (dms solve): the loader's errors, the answer extractor on replies written in many
// ways, the majority vote and its tie rule, and the Wilson interval against values worked out by
// hand from its formula.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "dms/eval/tasks.h"
#include "dms/util/error.h"

namespace dms::eval {
namespace {

namespace fs = std::filesystem;

TaskProblem number_problem() { return {"p", "arithmetic", "test", 1, "What is 7 + 5?", "12", {}}; }
TaskProblem choice_problem() {
  return {"q", "ordering", "test", 2, "Who is the youngest: Anna, Ben or Carl?", "Carl", {"Anna", "Ben", "Carl"}};
}

TEST(TaskAnswers, NumbersWrittenInManyWays) {
  const TaskProblem p = number_problem();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"7 + 5 = 12.", "12"},
      {"The answer is 12.", "12"},
      {"So, the answer is: **1,200** minutes.", "1200"},
      {"He has 12 - 3 = 9 apples left.\n#### 9\nThe answer is: 9", "9"},
      {"The answer is seven.", "7"},
      {"x = 12 / 3\nx = 4\n\nSo the solution of 3x = 12 is x = 4.", "4"},
      {"The answer is 3.0 hours", "3"},
      {"Answer: 2.50", "2.5"},
      {"Answer:\n\n42\n\nI hope this helps with 7 more things.", "42"},
      {"We get \\boxed{15}.", "15"},
      {"The answer is 12. Then 5 more makes 17.", "12"},
      {"The answer is 5. Wait, let me check again. The answer is 6.", "6"},
      {"H2O has 3 atoms.", "3"},
      {"x = -4", "-4"},
      {"Final answer: 007", "7"},
      {"It takes 1,2 and 3.", "3"},
      {"I do not know.", ""},
      {"", ""},
  };
  for (const auto& [reply, want] : cases) EXPECT_EQ(extract_answer(reply, p), want) << reply;
}

TEST(TaskAnswers, ChoicesAreWholeWordsInTheProblemsSpelling) {
  const TaskProblem p = choice_problem();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"The answer is: Carl.", "Carl"},
      {"Anna is older than Ben, so the youngest is Carl", "Carl"},
      {"the answer is carl", "Carl"},
      {"The answer is Ben, not Carl.", "Ben"},
      {"Benjamin and Annabel are not in the question. Ben is.", "Ben"},
      {"The answer is the third person. Anna is older than Carl.", "Carl"},
      {"Nobody.", ""},
  };
  for (const auto& [reply, want] : cases) EXPECT_EQ(extract_answer(reply, p), want) << reply;
}

TEST(TaskAnswers, MajorityLeavesEmptyOutAndBreaksTiesByFirstAppearance) {
  EXPECT_EQ(majority_answer({"", "3", "4", "4", "3"}), "3");
  EXPECT_EQ(majority_answer({"", "4", "3", "4", "3"}), "4");
  EXPECT_EQ(majority_answer({"5", "", "", "", "7", "7"}), "7");
  EXPECT_EQ(majority_answer({"", "", "2"}), "2");
  EXPECT_EQ(majority_answer({"", ""}), "");
  EXPECT_EQ(majority_answer({}), "");
  EXPECT_EQ(majority_answer({"9"}), "9");
}

TEST(TaskAnswers, WilsonIntervalMatchesItsFormulaWorkedByHand) {
  // 5 of 10: centre (0.5 + z^2/20) / (1 + z^2/10) = 0.5, half-width z sqrt(0.025 + z^2/400) / (1 + z^2/10)
  Interval i = wilson_interval(5, 10);
  EXPECT_NEAR(i.low, 0.2366, 1e-4);
  EXPECT_NEAR(i.high, 0.7634, 1e-4);
  i = wilson_interval(0, 10);  // centre = half-width = (z^2/20) / (1 + z^2/10)
  EXPECT_NEAR(i.low, 0.0, 1e-12);
  EXPECT_NEAR(i.high, 0.2775, 1e-4);
  i = wilson_interval(10, 10);
  EXPECT_NEAR(i.low, 1 - 0.2775, 1e-4);
  EXPECT_NEAR(i.high, 1.0, 1e-12);
}

class TaskFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dms_tasks_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& text) {
    const std::string path = (dir_ / ("t" + std::to_string(n_++) + ".jsonl")).string();
    std::ofstream(path) << text;
    return path;
  }
  // The loader's message for `text`, which must name the file, line `line` and `words`.
  void expect_error(const std::string& text, int line, const std::string& words) {
    const std::string path = write(text);
    try {
      load_tasks(path);
      ADD_FAILURE() << "no error for: " << text;
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(line > 0 ? path + ":" + std::to_string(line) : path), std::string::npos) << what;
      EXPECT_NE(what.find(words), std::string::npos) << what;
    }
  }
  fs::path dir_;
  int n_ = 0;
};

TEST_F(TaskFiles, ReadsEveryMember) {
  const auto tasks = load_tasks(write(
      R"({"id": "a", "family": "arithmetic", "level": 2, "split": "test", "question": "What is 1 + 2?", "answer": "3"})"
      "\n\n"
      R"({"id": "b", "family": "ordering", "level": 1, "question": "Who?", "answer": "Ben", "choices": ["Anna", "Ben"]})"
      "\n"));
  ASSERT_EQ(tasks.size(), 2u);
  EXPECT_EQ(tasks[0].id, "a");
  EXPECT_EQ(tasks[0].family, "arithmetic");
  EXPECT_EQ(tasks[0].level, 2);
  EXPECT_EQ(tasks[0].split, "test");
  EXPECT_EQ(tasks[0].question, "What is 1 + 2?");
  EXPECT_EQ(tasks[0].answer, "3");
  EXPECT_TRUE(tasks[0].choices.empty());
  EXPECT_EQ(tasks[1].choices, (std::vector<std::string>{"Anna", "Ben"}));
  EXPECT_EQ(tasks[1].split, "");
}

TEST_F(TaskFiles, BadInputNamesTheFileLineAndMember) {
  const std::string ok = R"({"id": "a", "family": "f", "question": "q?", "answer": "3"})";
  expect_error("{not json\n", 1, "not JSON");
  expect_error(ok + "\n[1, 2]\n", 2, "expected a JSON object");
  expect_error(R"({"family": "f", "question": "q?", "answer": "3"})", 1, "'id' is missing");
  expect_error(R"({"id": 5, "family": "f", "question": "q?", "answer": "3"})", 1, "'id' must be a string");
  expect_error(R"({"id": "a", "family": "f", "question": "q?", "answer": 3})", 1, "'answer' must be a string");
  expect_error(R"({"id": "a", "family": "f", "question": "q?", "answer": "3", "level": "x"})", 1,
               "'level' must be an integer");
  expect_error(R"({"id": "a", "family": "f", "question": "", "answer": "3"})", 1, "'question' is empty");
  expect_error(ok + "\n" + ok + "\n", 2, "id 'a' appears twice");
  expect_error(R"({"id": "a", "family": "f", "question": "q?", "answer": "three"})", 1, "decimal integer");
  expect_error(R"({"id": "a", "family": "f", "question": "q?", "answer": "03"})", 1, "decimal integer");
  expect_error(R"({"id": "a", "family": "f", "question": "q?", "answer": "Cy", "choices": ["Al", "Bo"]})", 1,
               "not one of its 'choices'");
  expect_error(R"({"id": "a", "family": "f", "question": "q?", "answer": "Al", "choices": []})", 1,
               "'choices' must be a non-empty array");
  expect_error("\n\n", 0, "no problems");
  try {
    load_tasks((dir_ / "missing.jsonl").string());
    ADD_FAILURE() << "no error for a missing file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.jsonl: cannot open"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dms::eval
