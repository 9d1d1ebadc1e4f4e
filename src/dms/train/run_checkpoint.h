// The checkpoint of a retrofit run: a directory holding the trainer state and an index,
// checkpoint.json, that names it along with the data cursor and the run's settings.
//
// Saving commits in this order: the new state file is written (atomically), then the index that
// names it replaces the old one (write to a temporary file, rename: the commit point), then the
// states the index no longer names go. An interruption at any moment leaves the previous
// checkpoint or the new one whole, and the next save clears whatever it left behind.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "dms/train/trainer.h"

namespace dms {

// A committed checkpoint as its index describes it.
struct SavedCheckpoint {
  int64_t step = 0;
  std::filesystem::path state;  // the trainer state file
  nlohmann::json data;          // DataCursor::to_json()
  nlohmann::json run;           // RunSettings::json
};

class RunCheckpoint {
 public:
  explicit RunCheckpoint(std::filesystem::path dir) : dir_(std::move(dir)) {}

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path index() const { return dir_ / "checkpoint.json"; }
  // Whether a checkpoint has been committed here.
  bool exists() const;

  // write_state, then commit.
  void save(const TrainerState& state, int64_t step, const nlohmann::json& data, const nlohmann::json& run) const;
  // The first half of a save: writes the state of `step` under its own name (the directory is
  // created) and returns that name. The committed checkpoint is unchanged.
  std::string write_state(const TrainerState& state, int64_t step) const;
  // The second half: the index naming `state` replaces the old one, then the other states go.
  void commit(const std::string& state, int64_t step, const nlohmann::json& data, const nlohmann::json& run) const;

  // The committed checkpoint. Throws Error naming the index when it is not a retrofit
  // checkpoint's, or the state file it names is missing.
  SavedCheckpoint load() const;

 private:
  std::filesystem::path dir_;
};

}  // namespace dms
