// Reasoning problems with checkable answers (data/tasks/*.jsonl, made by scripts/gen-tasks):
// loading them, reading the answer out of a written reply, and the majority vote over samples.
//
// A task file holds one JSON object per line: "id" (unique), "family", "level", "question" (sent
// as a user message), "answer" (a decimal integer, or one of "choices"), optionally "split" and
// "choices" (the candidate answers named in the question, e.g. people).
#pragma once
#include <cstdint>
#include <istream>
#include <string>
#include <string_view>
#include <vector>

namespace dms::eval {

struct TaskProblem {
  std::string id, family, split;
  int64_t level = 0;
  std::string question;
  std::string answer;
  std::vector<std::string> choices;  // empty: the answer is a number
};

// Throws Error naming the file, the line and the member for anything malformed: a line that is
// not an object, a missing or mistyped member, a repeated id, a numeric answer that is not a
// decimal integer, an answer that is not one of its choices, or no problem at all.
std::vector<TaskProblem> load_tasks(const std::string& path);
// The same from a stream, `name` standing for the file in messages.
std::vector<TaskProblem> load_tasks(std::istream& in, const std::string& name);

// The answer a reply gives, in the problem's own spelling ("" when it gives none). The last of
// the phrases "the answer is", "answer:", "final answer", "####" and "\boxed{" decides: the first
// number (or choice) in the rest of its sentence (or on the next line, when nothing follows it on
// its own). Without one, or with none there, the last number (or choice) in the reply. Numbers lose their
// thousands separators and a zero fraction ("1,200.0" -> "1200"); number words up to twenty count
// after an answer phrase ("the answer is seven"). Choices match whole words, ignoring case.
std::string extract_answer(std::string_view reply, const TaskProblem& problem);

// The answer most samples gave, empty answers left out ("" when every one is empty); among
// answers with as many votes, the one that appears first in `answers`.
std::string majority_answer(const std::vector<std::string>& answers);

// The Wilson score interval of `correct` out of `total` at 95% confidence, as [low, high].
struct Interval {
  double low = 0, high = 0;
};
Interval wilson_interval(int64_t correct, int64_t total);

}  // namespace dms::eval
