// How a checkpoint's DMS decision heads work (dms-spec section 1), read from the dms_* fields of
// config.json as the released nvidia/Qwen3-8B-DMS-8x and the reference trainer write them:
//
//   dms_separate_alpha        false: Mode A (borrowed query channel), true: Mode B (adapter)
//   dms_alpha_scale           scale of the decision logit (default 100)
//   dms_initial_alpha_offset  subtracted from it (default 5)
//   dms_window_size           a flagged key stays visible to this many more queries (default 512)
//   dms_alpha_per             "head" (each KV head decides) or "layer" (all follow head 0)
//   dms_cr                    the compression ratio it was trained for (informational)
//   dms_disable_eviction      keep every key (Mode A still zeroes its borrowed channel)
//
// A config.json without any dms_* field describes a model without decision heads.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>

namespace dms {

enum class DmsMode {
  Off,           // no decision heads
  QueryChannel,  // Mode A: l = scale * q[head g*G, channel D-1] - offset
  Adapter,       // Mode B: l = scale * dms_proj_alpha(dms_proj_alpha_norm(h)) - offset
};

std::string dms_mode_name(DmsMode mode);  // "off", "query-channel", "adapter"
// Parses dms_mode_name's words; throws Error naming `where` for anything else.
DmsMode parse_dms_mode(const std::string& name, const std::string& where);

struct DmsConfig {
  DmsMode mode = DmsMode::Off;
  double alpha_scale = 100.0;
  double alpha_offset = 5.0;
  int64_t window = 512;
  bool per_layer = false;
  bool eviction_disabled = false;
  double target_cr = 0;  // 0 when the checkpoint does not say

  // Whether the forward hands decision logits to attention (else they are undefined).
  bool decides() const { return mode != DmsMode::Off && !eviction_disabled; }

  // Reads the dms_* fields of a config.json object (or of an adapter's metadata); errors name
  // `where` and the field. Validated.
  static DmsConfig from_json(const nlohmann::json& j, const std::string& where);
  // The same fields, as from_json reads them back.
  nlohmann::json to_json() const;
  // Throws Error naming `where` and the field for values the forward cannot use.
  void validate(const std::string& where) const;
};

// Settings given on the command line, applied over what the checkpoint (or adapter) says.
struct DmsOverrides {
  std::optional<DmsMode> mode;
  std::optional<double> alpha_scale;
  std::optional<double> alpha_offset;
  std::optional<int64_t> window;
  std::optional<bool> per_layer;
  std::optional<bool> eviction_disabled;
  std::optional<double> target_cr;

  // Applies the set fields, then validates the result; errors name `where`.
  void apply(DmsConfig& config, const std::string& where) const;
};

}  // namespace dms
