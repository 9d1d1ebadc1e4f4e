#include "dms/train/data_jsonl.h"

#include <fstream>
#include <sstream>

#include "dms/util/error.h"

namespace dms {

std::string jsonl_where(const std::string& path, int64_t line) { return path + ":" + std::to_string(line); }

int64_t read_jsonl(const std::string& path, const std::function<void(int64_t, const nlohmann::json&)>& on_record) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot read");
  return read_jsonl(in, path, on_record);
}

int64_t read_jsonl(std::istream& in, const std::string& path,
                   const std::function<void(int64_t, const nlohmann::json&)>& on_record) {
  int64_t line_number = 0, records = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    nlohmann::json value;
    try {
      value = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {  // parse_error, out_of_range (a number past a double)
      fail(jsonl_where(path, line_number), std::string("malformed JSON: ") + e.what());
    }
    on_record(line_number, value);
    ++records;
  }
  if (in.bad()) fail(path, "read error");
  return records;
}

}  // namespace dms
