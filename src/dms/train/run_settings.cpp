#include "dms/train/run_settings.h"

namespace dms {

std::vector<std::string> RunSettings::differences(const nlohmann::json& saved) const {
  std::vector<std::string> out;
  for (const auto& [key, value] : json.items())
    if (!saved.contains(key) || saved[key] != value)
      out.push_back(key + " (saved " + (saved.contains(key) ? saved[key].dump() : "none") + ", now " + value.dump() + ")");
  for (const auto& [key, value] : saved.items())
    if (!json.contains(key)) out.push_back(key + " (saved " + value.dump() + ", now none)");
  return out;
}

}  // namespace dms
