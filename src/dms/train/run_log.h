// A retrofit run's log, DIR/log.jsonl: a record per step ({"type": "step", "step": N, ...}), per
// held-out evaluation ({"type": "eval", "step": N, ...}) and a summary at the end, appended
// through a JsonlAppender (so an interrupted write costs at most the unfinished line).
//
// A resumed run continues the log of the checkpoint it resumes from: records of steps after that
// checkpoint (written before the interruption, and written again now) are dropped first, so the
// log reads as if the run had never stopped.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "dms/util/jsonl_appender.h"

namespace dms {

class RunLog {
 public:
  // A new log at `path`, replacing any there.
  static RunLog fresh(const std::string& path);
  // The log at `path` (absent: empty) kept up to the checkpoint after `steps_done` steps: the
  // unfinished last line an interruption may leave is repaired as JsonlAppender does, then only
  // the records with a "step" at or below `steps_done` stay. Throws Error naming the file and
  // line of a line that is not JSON.
  static RunLog resumed(const std::string& path, int64_t steps_done);

  // Appends one record. Throws Error naming the file.
  void write(const nlohmann::json& record) { out_->append(record); }
  const std::string& path() const { return out_->path(); }

 private:
  explicit RunLog(const std::string& path) : out_(std::make_unique<JsonlAppender>(path)) {}
  std::unique_ptr<JsonlAppender> out_;
};

}  // namespace dms
