#include "dms/eval/tasks.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "dms/util/error.h"

namespace dms::eval {
namespace {

using nlohmann::json;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_word(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

bool decimal_integer(const std::string& s) {
  if (s.empty() || (s.size() > 1 && s[0] == '0')) return false;
  return std::all_of(s.begin(), s.end(), is_digit);
}

const json& member(const json& j, const std::string& name, json::value_t type, const std::string& where) {
  const auto it = j.find(name);
  if (it == j.end()) fail(where, "member '" + name + "' is missing");
  const bool ok = it->type() == type || (type == json::value_t::number_integer && it->is_number_unsigned());
  if (!ok) fail(where, "member '" + name + "' must be " + (type == json::value_t::string ? "a string" : "an integer"));
  return *it;
}

// A number read at text[i] (digits, thousands separators between digit groups, a fraction),
// normalised; `end` is set past it.
std::string read_number(std::string_view t, size_t i, size_t& end) {
  std::string digits;
  size_t j = i;
  while (j < t.size()) {
    if (is_digit(t[j])) {
      digits += t[j++];
    } else if (t[j] == ',' && !digits.empty() && j + 3 < t.size() && is_digit(t[j + 1]) && is_digit(t[j + 2]) &&
               is_digit(t[j + 3]) && (j + 4 == t.size() || !is_digit(t[j + 4]))) {
      ++j;  // "1,200": a separator before exactly three digits
    } else {
      break;
    }
  }
  std::string fraction;
  if (j + 1 < t.size() && t[j] == '.' && is_digit(t[j + 1])) {
    size_t k = j + 1;
    while (k < t.size() && is_digit(t[k])) fraction += t[k++];
    j = k;
  }
  end = j;
  while (!fraction.empty() && fraction.back() == '0') fraction.pop_back();
  const size_t nz = digits.find_first_not_of('0');
  digits = nz == std::string::npos ? "0" : digits.substr(nz);
  return fraction.empty() ? digits : digits + "." + fraction;
}

// Every number in t, in order, with where it starts. A '-' right before one makes it negative.
struct Found {
  size_t at;
  std::string value;
};
std::vector<Found> numbers_in(std::string_view t) {
  std::vector<Found> out;
  for (size_t i = 0; i < t.size();) {
    if (!is_digit(t[i])) {
      ++i;
      continue;
    }
    if (i > 0 && is_word(t[i - 1])) {  // glued to a word ("x2", "h2o"): not a number of the answer
      while (i < t.size() && is_word(t[i])) ++i;
      continue;
    }
    size_t end = i;
    std::string v = read_number(t, i, end);
    if (i > 0 && t[i - 1] == '-' && (i < 2 || !is_word(t[i - 2])) && v != "0") v = "-" + v;
    out.push_back({i, std::move(v)});
    i = end;
  }
  return out;
}

constexpr std::array<const char*, 21> kNumberWords = {
    "zero",     "one",     "two",     "three",     "four",     "five",     "six",
    "seven",    "eight",   "nine",    "ten",       "eleven",   "twelve",   "thirteen",
    "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"};

// Whole-word occurrences of `word` (lower case) in `t` (lower case), in order.
std::vector<size_t> word_positions(const std::string& t, const std::string& word) {
  std::vector<size_t> out;
  if (word.empty()) return out;
  for (size_t p = t.find(word); p != std::string::npos; p = t.find(word, p + 1)) {
    const bool before = p == 0 || !is_word(t[p - 1]);
    const bool after = p + word.size() >= t.size() || !is_word(t[p + word.size()]);
    if (before && after) out.push_back(p);
  }
  return out;
}

// The candidates of a choice problem mentioned in t (lower case), ordered by where they occur.
std::vector<Found> choices_in(const std::string& t, const std::vector<std::string>& choices) {
  std::vector<Found> out;
  for (const auto& c : choices)
    for (size_t p : word_positions(t, lower(c))) out.push_back({p, c});
  std::sort(out.begin(), out.end(), [](const Found& a, const Found& b) { return a.at < b.at; });
  return out;
}

}  // namespace

std::vector<TaskProblem> load_tasks(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail(path, "cannot open");
  return load_tasks(in, path);
}

std::vector<TaskProblem> load_tasks(std::istream& in, const std::string& path) {
  std::vector<TaskProblem> out;
  std::set<std::string> ids;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(number);
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      fail(where, std::string("not JSON: ") + e.what());
    }
    if (!j.is_object()) fail(where, "expected a JSON object");
    TaskProblem p;
    p.id = member(j, "id", json::value_t::string, where).get<std::string>();
    p.family = member(j, "family", json::value_t::string, where).get<std::string>();
    p.question = member(j, "question", json::value_t::string, where).get<std::string>();
    p.answer = member(j, "answer", json::value_t::string, where).get<std::string>();
    if (j.contains("level")) p.level = member(j, "level", json::value_t::number_integer, where).get<int64_t>();
    if (j.contains("split")) p.split = member(j, "split", json::value_t::string, where).get<std::string>();
    if (p.id.empty()) fail(where, "member 'id' is empty");
    if (p.question.empty()) fail(where, "member 'question' is empty");
    if (!ids.insert(p.id).second) fail(where, "id '" + p.id + "' appears twice");
    if (j.contains("choices")) {
      const json& c = j["choices"];
      if (!c.is_array() || c.empty()) fail(where, "member 'choices' must be a non-empty array of strings");
      for (const auto& e : c) {
        if (!e.is_string() || e.get<std::string>().empty())
          fail(where, "member 'choices' must be a non-empty array of strings");
        p.choices.push_back(e.get<std::string>());
      }
      if (std::find(p.choices.begin(), p.choices.end(), p.answer) == p.choices.end())
        fail(where, "member 'answer' ('" + p.answer + "') is not one of its 'choices'");
    } else if (!decimal_integer(p.answer) &&
               !(p.answer.size() > 1 && p.answer[0] == '-' && decimal_integer(p.answer.substr(1)))) {
      fail(where, "member 'answer' must be a decimal integer (or one of 'choices'), got '" + p.answer + "'");
    }
    out.push_back(std::move(p));
  }
  if (out.empty()) fail(path, "no problems");
  return out;
}

std::string extract_answer(std::string_view reply, const TaskProblem& problem) {
  const std::string t = lower(reply);
  // The last answer phrase, and what follows it up to the end of its line.
  size_t cue_end = std::string::npos, cue_at = 0;
  for (const char* cue : {"the answer is", "answer:", "####", "\\boxed{", "final answer"}) {
    const size_t p = t.rfind(cue);
    if (p != std::string::npos && (cue_end == std::string::npos || p > cue_at)) {
      cue_at = p;
      cue_end = p + std::string_view(cue).size();
    }
  }
  const bool choice = !problem.choices.empty();
  if (cue_end != std::string::npos) {
    size_t line_end = t.find('\n', cue_end);
    // "The answer is:\n\n12": the answer may sit on the next non-empty line
    if (line_end != std::string::npos && t.find_first_not_of(" \t:*", cue_end) == line_end) {
      const size_t next = t.find_first_not_of("\n \t", line_end);
      line_end = next == std::string::npos ? std::string::npos : t.find('\n', next);
    }
    std::string tail = t.substr(cue_end, line_end == std::string::npos ? std::string::npos : line_end - cue_end);
    for (const char* end : {". ", "? ", "! "}) tail = tail.substr(0, tail.find(end));  // its first sentence
    if (choice) {
      const auto found = choices_in(tail, problem.choices);
      if (!found.empty()) return found.front().value;
    } else {
      const auto found = numbers_in(tail);
      size_t word_at = std::string::npos;
      std::string word_value;
      for (size_t n = 0; n < kNumberWords.size(); ++n) {
        const auto at = word_positions(tail, kNumberWords[n]);
        if (!at.empty() && at.front() < word_at) {
          word_at = at.front();
          word_value = std::to_string(n);
        }
      }
      if (!found.empty() && found.front().at < word_at) return found.front().value;
      if (!word_value.empty()) return word_value;
    }
  }
  if (choice) {
    const auto found = choices_in(t, problem.choices);
    return found.empty() ? "" : found.back().value;
  }
  const auto found = numbers_in(t);
  return found.empty() ? "" : found.back().value;
}

std::string majority_answer(const std::vector<std::string>& answers) {
  std::string best;
  int64_t best_votes = 0;
  for (size_t i = 0; i < answers.size(); ++i) {
    if (answers[i].empty() || std::find(answers.begin(), answers.begin() + i, answers[i]) != answers.begin() + i)
      continue;  // counted at its first appearance
    const int64_t votes = std::count(answers.begin() + i, answers.end(), answers[i]);
    if (votes > best_votes) {
      best = answers[i];
      best_votes = votes;
    }
  }
  return best;
}

Interval wilson_interval(int64_t correct, int64_t total) {
  if (total <= 0) return {0, 1};
  const double z = 1.959963984540054, n = static_cast<double>(total), p = static_cast<double>(correct) / n;
  const double centre = (p + z * z / (2 * n)) / (1 + z * z / n);
  const double half = z * std::sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n);
  return {std::clamp(centre - half, 0.0, p), std::clamp(centre + half, p, 1.0)};  // p inside, despite rounding
}

}  // namespace dms::eval
