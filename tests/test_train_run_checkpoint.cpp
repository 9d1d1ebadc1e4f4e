// A retrofit run's checkpoint: what a save commits reads back, and an interruption at any point
// of a save (the new state written but not committed, the index half written, the old states not
// yet removed) leaves a checkpoint that loads whole, which the next save then tidies.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "dms/train/run_checkpoint.h"
#include "test_train_data_util.h"

namespace dms::test {
namespace {

namespace fs = std::filesystem;

TrainerState state_of_step(int64_t step) {
  TrainerState s;
  s.tensors["weight/x"] = at::full({2, 3}, static_cast<double>(step), at::kFloat);
  s.meta = {{"step", step}};
  return s;
}

const nlohmann::json kRun = {{"window", 8}, {"seed", 3}};

nlohmann::json cursor_at(int64_t row) { return {{"epoch", 0}, {"row", row}}; }

std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// The checkpoint loads as the save of `step` made it, its state file included.
void expect_checkpoint_of(const RunCheckpoint& c, int64_t step) {
  const SavedCheckpoint saved = c.load();
  EXPECT_EQ(saved.step, step);
  EXPECT_EQ(saved.data, cursor_at(step * 10));
  EXPECT_EQ(saved.run, kRun);
  const TrainerState state = load_trainer_state(saved.state.string());
  EXPECT_EQ(state.meta["step"], step);
  EXPECT_TRUE(at::equal(state.tensors.at("weight/x"), state_of_step(step).tensors.at("weight/x")));
}

void save_step(const RunCheckpoint& c, int64_t step) { c.save(state_of_step(step), step, cursor_at(step * 10), kRun); }

TEST(RunCheckpoint, ASaveReadsBack) {
  TempDir dir;
  const RunCheckpoint c(dir.path("run/checkpoint"));
  EXPECT_FALSE(c.exists());
  save_step(c, 7);
  EXPECT_TRUE(c.exists());
  expect_checkpoint_of(c, 7);
  save_step(c, 14);
  expect_checkpoint_of(c, 14);
  EXPECT_EQ(files_in(c.dir()), (std::vector<std::string>{"checkpoint.json", "state-00000014.safetensors"}));
}

TEST(RunCheckpoint, ACrashBeforeTheCommitLeavesThePreviousCheckpoint) {
  TempDir dir;
  const RunCheckpoint c(dir.path("checkpoint"));
  save_step(c, 5);
  // Killed after writing the state of step 10, while writing its index.
  EXPECT_EQ(c.write_state(state_of_step(10), 10), "state-00000010.safetensors");
  std::ofstream(c.index().string() + ".tmp") << "{\"format\": \"dms-retrofit-chec";
  expect_checkpoint_of(c, 5);
  // The resumed run saves step 10 again: committed, and nothing of the crash is left.
  save_step(c, 10);
  expect_checkpoint_of(c, 10);
  EXPECT_EQ(files_in(c.dir()), (std::vector<std::string>{"checkpoint.json", "state-00000010.safetensors"}));
}

TEST(RunCheckpoint, ACrashAfterTheCommitLeavesTheNewCheckpoint) {
  TempDir dir;
  const RunCheckpoint c(dir.path("checkpoint"));
  save_step(c, 5);
  // Killed after the commit of step 10, before the state of step 5 was removed.
  c.commit(c.write_state(state_of_step(10), 10), 10, cursor_at(100), kRun);
  save_trainer_state((c.dir() / "state-00000005.safetensors").string(), state_of_step(5));
  expect_checkpoint_of(c, 10);
  save_step(c, 15);
  expect_checkpoint_of(c, 15);
  EXPECT_EQ(files_in(c.dir()), (std::vector<std::string>{"checkpoint.json", "state-00000015.safetensors"}));
}

TEST(RunCheckpoint, AnIndexThatIsNotACheckpointIsAnErrorNamingIt) {
  TempDir dir;
  const RunCheckpoint c(dir.path("checkpoint"));
  save_step(c, 3);
  const std::string index = c.index().string();
  const auto expect_refused = [&](const std::string& text, const std::string& why) {
    std::ofstream(index, std::ios::trunc) << text;
    try {
      c.load();
      ADD_FAILURE() << "accepted " << text;
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(index), std::string::npos) << what;
      EXPECT_NE(what.find(why), std::string::npos) << what;
    }
  };
  expect_refused("{\"format\": ", "not valid JSON");
  expect_refused(R"({"format": "something-else", "step": 3, "state": "state-00000003.safetensors", "data": {}, "run": {}})",
                 "is not a dms retrofit checkpoint");
  expect_refused(R"({"format": 7, "step": 3, "state": "state-00000003.safetensors", "data": {}, "run": {}})",
                 "is not a dms retrofit checkpoint");
  expect_refused(R"({"format": "dms-retrofit-checkpoint", "step": 3, "state": "state-00000003.safetensors", "data": {}})",
                 "is not a dms retrofit checkpoint");
  expect_refused(R"({"format": "dms-retrofit-checkpoint", "step": 9, "state": "state-00000009.safetensors", "data": {}, "run": {}})",
                 "state-00000009.safetensors, which does not exist");
}

}  // namespace
}  // namespace dms::test
