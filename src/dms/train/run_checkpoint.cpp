#include "dms/train/run_checkpoint.h"

#include <cstdio>
#include <fstream>

#include "dms/util/error.h"
#include "dms/util/text_file.h"

namespace dms {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "dms-retrofit-checkpoint";

std::string state_name(int64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "state-%08lld.safetensors", static_cast<long long>(step));
  return name;
}

}  // namespace

bool RunCheckpoint::exists() const { return fs::exists(index()); }

void RunCheckpoint::save(const TrainerState& state, int64_t step, const nlohmann::json& data,
                         const nlohmann::json& run) const {
  commit(write_state(state, step), step, data, run);
}

std::string RunCheckpoint::write_state(const TrainerState& state, int64_t step) const {
  fs::create_directories(dir_);
  const std::string name = state_name(step);
  save_trainer_state((dir_ / name).string(), state);
  return name;
}

void RunCheckpoint::commit(const std::string& state, int64_t step, const nlohmann::json& data,
                           const nlohmann::json& run) const {
  const nlohmann::json index = {{"format", kFormat}, {"step", step}, {"state", state}, {"data", data}, {"run", run}};
  write_text_atomically(this->index().string(), index.dump(2) + "\n");
  for (const auto& e : fs::directory_iterator(dir_)) {
    const std::string f = e.path().filename().string();
    if (f != state && f.starts_with("state-")) fs::remove(e.path());
  }
}

SavedCheckpoint RunCheckpoint::load() const {
  const std::string where = index().string();
  std::ifstream in(index());
  if (!in) fail(where, "cannot read");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(where, std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object() || !j.contains("format") || j["format"] != kFormat || !j.contains("state") || !j["state"].is_string() ||
      !j.contains("run") || !j["run"].is_object() || !j.contains("data") || !j.contains("step") ||
      !j["step"].is_number_integer())
    fail(where, "is not a dms retrofit checkpoint");
  SavedCheckpoint saved{.step = j["step"].get<int64_t>(), .state = dir_ / j["state"].get<std::string>(),
                        .data = j["data"], .run = j["run"]};
  if (!fs::exists(saved.state)) fail(where, "names the state " + saved.state.string() + ", which does not exist");
  return saved;
}

}  // namespace dms
