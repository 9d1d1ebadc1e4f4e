// JSON Lines files: one JSON value per line, read with errors that name the file and line.
// Shared by the training data reader and `dms gen-data` (its prompt set and its output).
#pragma once
#include <cstdint>
#include <functional>
#include <istream>
#include <string>

#include <nlohmann/json.hpp>

namespace dms {

// Calls `on_record(line_number, value)` for every non-blank line of `path` (line numbers from 1).
// Throws Error "<path>:<line>: malformed JSON: ..." for a line that does not parse, and
// Error "<path>: cannot read" when the file cannot be opened. Returns the number of records.
// A final line without its newline is read like any other.
int64_t read_jsonl(const std::string& path, const std::function<void(int64_t, const nlohmann::json&)>& on_record);
// The same for lines from `in`; `path` names them in errors.
int64_t read_jsonl(std::istream& in, const std::string& path,
                   const std::function<void(int64_t, const nlohmann::json&)>& on_record);

// "<path>:<line>", the `where` of an error about one record.
std::string jsonl_where(const std::string& path, int64_t line);

}  // namespace dms
