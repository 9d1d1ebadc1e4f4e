// What a retrofit run records of itself and how a resumed run is compared with it: each
// difference named with both values, and the settings a run saved by an older build (recorded
// under the keys it used, whatever the options are called now) still agree.
#include <gtest/gtest.h>

#include "dms/train/retrofit_run.h"
#include "dms/train/run_settings.h"

namespace dms::test {
namespace {

// The "run" of a checkpoint.json as the build before the --dms-* options wrote it, for
// `dms retrofit --model /m --data /d.jsonl --heldout /h.jsonl --steps 20 --threads 2 --seq-len 64
// --batch 2 --window 8 --target-cr 1.5 --ramp-steps 10 --lr 3e-3 --seed 3 --out /o`.
const char* kOlderRun = R"({"accumulation": 1, "alpha_offset": 5.0, "alpha_per": "head", "alpha_scale": 100.0,
  "batch": 2, "data": ["/d.jsonl"], "dms_mode": "adapter", "dtype": "f32", "heldout": ["/h.jsonl"],
  "heldout_fraction": 0.0, "lr": 0.003, "max_grad_norm": 1.0, "model": "/m", "ramp_steps": 10, "seed": 3,
  "seq_len": 64, "target_cr": 1.5, "tau": 0.1, "train": "adapter", "window": 8, "world": 1})";

// The same run as `dms retrofit` now gives it (--dms-window 8; the other decision settings are the
// defaults of fresh heads, which the command fills in).
RetrofitOptions same_run() {
  RetrofitOptions o;
  o.model = "/m";
  o.data = {"/d.jsonl"};
  o.heldout = {"/h.jsonl"};
  o.heldout_fraction = 0;
  o.steps = 20;
  o.seq_len = 64;
  o.batch = 2;
  o.window = 8;
  o.alpha_scale = 100;
  o.alpha_offset = 5;
  o.per_layer = false;
  o.target_cr = 1.5;
  o.lr = 3e-3;
  o.seed = 3;
  o.out = "/o";
  return o;
}

TEST(RunSettings, ARunSavedByAnOlderBuildAgrees) {
  const nlohmann::json saved = nlohmann::json::parse(kOlderRun);
  EXPECT_EQ(retrofit_run_settings(same_run(), 10, 1).differences(saved), std::vector<std::string>{});
}

TEST(RunSettings, ARunFromAnAdapterRecordsTheSettingsItTakesFromItAsNull) {
  RetrofitOptions o = same_run();
  o.adapter = "/a.safetensors";
  o.alpha_scale.reset();
  o.alpha_offset.reset();
  o.per_layer.reset();
  const nlohmann::json j = retrofit_run_settings(o, 10, 1).json;
  EXPECT_EQ(j["window"], 8);
  EXPECT_TRUE(j["alpha_scale"].is_null());
  EXPECT_TRUE(j["alpha_offset"].is_null());
  EXPECT_TRUE(j["alpha_per"].is_null());
  EXPECT_EQ(j["dms_adapter"], "/a.safetensors");
  EXPECT_FALSE(retrofit_run_settings(same_run(), 10, 1).json.contains("dms_adapter"));
}

TEST(RunSettings, EachDifferenceNamesTheKeyAndBothValues) {
  const nlohmann::json saved = nlohmann::json::parse(kOlderRun);
  RetrofitOptions o = same_run();
  o.window = 9;
  o.per_layer = true;
  o.adapter = "/a.safetensors";
  EXPECT_EQ(retrofit_run_settings(o, 10, 2).differences(saved),
            (std::vector<std::string>{"alpha_per (saved \"head\", now \"layer\")",
                                      "dms_adapter (saved none, now \"/a.safetensors\")", "window (saved 8, now 9)",
                                      "world (saved 1, now 2)"}));
  nlohmann::json with_adapter = saved;
  with_adapter["dms_adapter"] = "/a.safetensors";
  EXPECT_EQ(retrofit_run_settings(same_run(), 10, 1).differences(with_adapter),
            std::vector<std::string>{"dms_adapter (saved \"/a.safetensors\", now none)"});
}

TEST(RunSettings, NumbersCompareByValueWhateverTheirJsonType) {
  // A seed recorded unsigned and read back from text as an integer is the same seed.
  const RunSettings now{{{"seed", uint64_t{3}}, {"lr", 0.003}}};
  EXPECT_TRUE(now.differences(nlohmann::json::parse(R"({"seed": 3, "lr": 0.003})")).empty());
  EXPECT_EQ(now.differences(nlohmann::json::parse(R"({"seed": 4, "lr": 0.003})")),
            std::vector<std::string>{"seed (saved 4, now 3)"});
}

}  // namespace
}  // namespace dms::test
