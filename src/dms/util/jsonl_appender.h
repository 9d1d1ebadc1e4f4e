// An append-only JSON Lines file (a run's log, gen-data's replies) that an interrupted write
// cannot spoil. Records are written whole, one line each, and flushed at once, so a crash or
// kill leaves at most the last line unfinished. Opening repairs that line by one rule:
//
//   - a last line without its newline that parses as a JSON object is a complete record whose
//     newline was lost: it is kept and the newline added (a prefix of an object's text is never
//     itself an object, so a torn record cannot pass for a whole one);
//   - any other last line without its newline is a torn record: it is cut off.
//
// Nothing complete is lost and nothing torn is read. Lines before the last were written whole and
// are left alone: a malformed one is not an interrupted write, and readers report it.
#pragma once
#include <cstdio>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace dms {

// What repairing a file's end did.
enum class JsonlTail {
  Whole,          // empty, absent, or ending with a newline: nothing to do
  NewlineAdded,   // the last record was complete but lacked its newline
  TornLineCut,    // the last line was an unfinished record and was removed
};

// Applies the rule above to `path` (absent: Whole). Throws Error naming `path` when it cannot
// be read or rewritten.
JsonlTail repair_jsonl_tail(const std::string& path);

class JsonlAppender {
 public:
  // Repairs the end of `path` (created when absent), then opens it for appending. Throws Error
  // naming `path`.
  explicit JsonlAppender(const std::string& path);
  ~JsonlAppender();
  JsonlAppender(const JsonlAppender&) = delete;
  JsonlAppender& operator=(const JsonlAppender&) = delete;

  // What opening found at the end of the file.
  JsonlTail repaired() const { return repaired_; }
  const std::string& path() const { return path_; }

  // Writes `record` as one line and flushes it. Invalid UTF-8 in strings (a model's reply may cut
  // a character) is written as U+FFFD rather than failing. Throws Error naming the file.
  void append(const nlohmann::json& record);

 private:
  std::string path_;
  JsonlTail repaired_;
  FILE* file_ = nullptr;
};

}  // namespace dms
