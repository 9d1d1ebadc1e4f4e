#include "dms/train/run_log.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dms/train/data_jsonl.h"
#include "dms/util/error.h"
#include "dms/util/text_file.h"

namespace dms {

namespace fs = std::filesystem;

RunLog RunLog::fresh(const std::string& path) {
  std::error_code ec;
  fs::remove(path, ec);
  if (ec) fail(path, "cannot remove the old log: " + ec.message());
  return RunLog(path);
}

RunLog RunLog::resumed(const std::string& path, int64_t steps_done) {
  if (!fs::exists(path)) return RunLog(path);
  repair_jsonl_tail(path);
  std::string kept;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, "cannot read");
    int64_t number = 0;
    for (std::string line; std::getline(in, line);) {
      ++number;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json r;
      try {
        r = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        fail(jsonl_where(path, number), std::string("malformed JSON: ") + e.what());
      }
      if (r.is_object() && r.contains("step") && r["step"].is_number_integer() && r["step"].get<int64_t>() <= steps_done)
        kept += line + "\n";
    }
  }
  write_text_atomically(path, kept);  // one rename: an interruption here loses nothing
  return RunLog(path);
}

}  // namespace dms
