// DmsConfig from config.json against the dms_* settings transformers' config object holds for the
// same file (make_dms_fixtures.py writes them to NAME.ref.json), the released checkpoint's
// layout, command-line overrides, and bad values.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "dms/model/config.h"
#include "dms/util/error.h"
#include "test_dms_model_fixtures.h"

namespace dms::test {
namespace {

using nlohmann::json;

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

class DmsCheckpointConfig : public ::testing::TestWithParam<std::string> {};

TEST_P(DmsCheckpointConfig, MatchesTransformers) {
  const DmsConfig c = ModelConfig::from_hf_dir(dms_fixture(GetParam())).dms;
  const json hf = read_json_file(dms_fixture(GetParam() + ".ref.json"))["dms"];
  EXPECT_EQ(c.mode, hf["dms_separate_alpha"].get<bool>() ? DmsMode::Adapter : DmsMode::QueryChannel);
  EXPECT_DOUBLE_EQ(c.alpha_scale, hf["dms_alpha_scale"].get<double>());
  EXPECT_DOUBLE_EQ(c.alpha_offset, hf["dms_initial_alpha_offset"].get<double>());
  EXPECT_EQ(c.window, hf["dms_window_size"].get<int64_t>());
  EXPECT_EQ(c.per_layer, hf["per_layer"].get<bool>());
  EXPECT_FALSE(c.eviction_disabled);
  EXPECT_TRUE(c.decides());
}

INSTANTIATE_TEST_SUITE_P(Golden, DmsCheckpointConfig, ::testing::ValuesIn(kDmsModels),
                         [](const auto& info) { return info.param; });

// The released checkpoint keeps Qwen3's model_type and names its own classes in architectures
// and auto_map; the dms_* fields are those of its config class.
TEST(DmsConfig, ReleasedCheckpointLayoutLoadsUnchanged) {
  const std::string dir = dms_fixture("mode_a");
  const json raw = read_json_file(dir + "/config.json");
  ASSERT_EQ(raw["model_type"], "qwen3");
  ASSERT_TRUE(raw.contains("auto_map") && raw.contains("architectures") && raw.contains("dms_tau") &&
              raw.contains("dms_paged_attention_block_size") && raw["dms_chunked_prefill"].is_null())
      << "the fixture is not laid out like the released checkpoint";
  const ModelConfig c = ModelConfig::from_hf_dir(dir);
  EXPECT_EQ(c.arch, Arch::Qwen3);
  EXPECT_EQ(c.dms.mode, DmsMode::QueryChannel);
  EXPECT_DOUBLE_EQ(c.dms.target_cr, raw["dms_cr"].get<double>());
  EXPECT_EQ(c.dms.window, raw["dms_window_size"].get<int64_t>());
}

TEST(DmsConfig, CheckpointWithoutDmsFieldsHasNoDecisionHeads) {
  const DmsConfig c = ModelConfig::from_hf_dir(dms_fixture("mode_b_head_base")).dms;
  EXPECT_EQ(c.mode, DmsMode::Off);
  EXPECT_FALSE(c.decides());
}

// A copy of mode_a's config.json with `edit` applied, in its own directory.
std::string edited_config(const ScratchDir& scratch, const std::function<void(json&)>& edit) {
  json cfg = read_json_file(dms_fixture("mode_a") + "/config.json");
  edit(cfg);
  std::ofstream(scratch / "config.json") << cfg.dump(1);
  return (scratch / "").string();
}

TEST(DmsConfig, DisableEvictionKeepsTheMode) {
  ScratchDir scratch;
  const auto dir = edited_config(scratch, [](json& c) { c["dms_disable_eviction"] = true; });
  const DmsConfig c = ModelConfig::from_hf_dir(dir).dms;
  EXPECT_EQ(c.mode, DmsMode::QueryChannel);
  EXPECT_TRUE(c.eviction_disabled);
  EXPECT_FALSE(c.decides());
}

struct BadValue {
  const char* name;
  std::function<void(json&)> edit;
  const char* field;  // the error must name it
};

TEST(DmsConfig, BadValuesNameTheFileAndField) {
  const std::vector<BadValue> cases = {
      {"window 0", [](json& c) { c["dms_window_size"] = 0; }, "dms_window_size"},
      {"negative window", [](json& c) { c["dms_window_size"] = -16; }, "dms_window_size"},
      {"fractional window", [](json& c) { c["dms_window_size"] = 16.5; }, "dms_window_size"},
      {"window as text", [](json& c) { c["dms_window_size"] = "16"; }, "dms_window_size"},
      {"huge window", [](json& c) { c["dms_window_size"] = int64_t{1} << 40; }, "dms_window_size"},
      {"unknown alpha_per", [](json& c) { c["dms_alpha_per"] = "token"; }, "dms_alpha_per"},
      {"alpha_per not text", [](json& c) { c["dms_alpha_per"] = 1; }, "dms_alpha_per"},
      {"scale as text", [](json& c) { c["dms_alpha_scale"] = "100"; }, "dms_alpha_scale"},
      {"scale as bool", [](json& c) { c["dms_alpha_scale"] = true; }, "dms_alpha_scale"},
      {"offset as list", [](json& c) { c["dms_initial_alpha_offset"] = json::array({5}); }, "dms_initial_alpha_offset"},
      {"separate_alpha as text", [](json& c) { c["dms_separate_alpha"] = "yes"; }, "dms_separate_alpha"},
      {"disable_eviction as number", [](json& c) { c["dms_disable_eviction"] = 1; }, "dms_disable_eviction"},
      {"negative cr", [](json& c) { c["dms_cr"] = -8; }, "dms_cr"},
  };
  for (const auto& bad : cases) {
    ScratchDir scratch;
    const auto dir = edited_config(scratch, bad.edit);
    const std::string msg = error_of([&] { ModelConfig::from_hf_dir(dir); });
    EXPECT_NE(msg.find(dir + "config.json"), std::string::npos) << bad.name << ": " << msg;
    EXPECT_NE(msg.find(bad.field), std::string::npos) << bad.name << ": " << msg;
  }
}

TEST(DmsConfig, OverridesApplyOverTheCheckpoint) {
  DmsConfig c = ModelConfig::from_hf_dir(dms_fixture("mode_a")).dms;
  DmsOverrides o;
  o.window = 4;
  o.per_layer = true;
  o.alpha_offset = 2.5;
  o.apply(c, "test");
  EXPECT_EQ(c.window, 4);
  EXPECT_TRUE(c.per_layer);
  EXPECT_DOUBLE_EQ(c.alpha_offset, 2.5);
  EXPECT_DOUBLE_EQ(c.alpha_scale, 100.0);
  EXPECT_EQ(c.mode, DmsMode::QueryChannel);
  DmsOverrides off;
  off.mode = DmsMode::Off;
  off.apply(c, "test");
  EXPECT_FALSE(c.decides());
}

TEST(DmsConfig, BadOverridesNameTheSetting) {
  DmsConfig c;
  DmsOverrides zero_window;
  zero_window.window = 0;
  const std::string msg = error_of([&] { zero_window.apply(c, "--dms-window"); });
  EXPECT_NE(msg.find("--dms-window"), std::string::npos) << msg;
  EXPECT_NE(msg.find("dms_window_size"), std::string::npos) << msg;
  DmsOverrides nan_scale;
  nan_scale.alpha_scale = std::nan("");
  EXPECT_NE(error_of([&] { nan_scale.apply(c, "x"); }).find("dms_alpha_scale"), std::string::npos);
  EXPECT_NE(error_of([] { parse_dms_mode("sometimes", "--dms-mode"); }).find("--dms-mode"), std::string::npos);
  for (DmsMode m : {DmsMode::Off, DmsMode::QueryChannel, DmsMode::Adapter})
    EXPECT_EQ(parse_dms_mode(dms_mode_name(m), "x"), m);
}

TEST(DmsConfig, JsonRoundTrips) {
  for (const auto& name : kDmsModels) {
    const DmsConfig c = ModelConfig::from_hf_dir(dms_fixture(name)).dms;
    const DmsConfig back = DmsConfig::from_json(c.to_json(), "round trip");
    EXPECT_EQ(back.mode, c.mode) << name;
    EXPECT_EQ(back.alpha_scale, c.alpha_scale) << name;
    EXPECT_EQ(back.alpha_offset, c.alpha_offset) << name;
    EXPECT_EQ(back.window, c.window) << name;
    EXPECT_EQ(back.per_layer, c.per_layer) << name;
    EXPECT_EQ(back.target_cr, c.target_cr) << name;
  }
  EXPECT_EQ(DmsConfig::from_json(DmsConfig{}.to_json(), "off").mode, DmsMode::Off);
}

}  // namespace
}  // namespace dms::test
