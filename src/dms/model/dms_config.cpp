#include "dms/model/dms_config.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "dms/util/error.h"

namespace dms {
namespace {

using nlohmann::json;

// Far beyond any context length, and small enough that position + window + 1 fits in int32.
constexpr int64_t kMaxWindow = std::numeric_limits<int32_t>::max() / 2;

const json* field(const json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

double number(const json& j, const char* key, double fallback, const std::string& where) {
  const json* v = field(j, key);
  if (!v) return fallback;
  if (!v->is_number()) fail(where, std::string("field '") + key + "' must be a number (got " + v->dump() + ")");
  return v->get<double>();
}

int64_t integer(const json& j, const char* key, int64_t fallback, const std::string& where) {
  const json* v = field(j, key);
  if (!v) return fallback;
  if (!v->is_number_integer())
    fail(where, std::string("field '") + key + "' must be an integer (got " + v->dump() + ")");
  return v->get<int64_t>();
}

bool boolean(const json& j, const char* key, bool fallback, const std::string& where) {
  const json* v = field(j, key);
  if (!v) return fallback;
  if (!v->is_boolean()) fail(where, std::string("field '") + key + "' must be true or false (got " + v->dump() + ")");
  return v->get<bool>();
}

}  // namespace

std::string dms_mode_name(DmsMode mode) {
  switch (mode) {
    case DmsMode::Off: return "off";
    case DmsMode::QueryChannel: return "query-channel";
    case DmsMode::Adapter: return "adapter";
  }
  return "?";
}

DmsMode parse_dms_mode(const std::string& name, const std::string& where) {
  for (DmsMode m : {DmsMode::Off, DmsMode::QueryChannel, DmsMode::Adapter})
    if (name == dms_mode_name(m)) return m;
  fail(where, "unknown DMS mode '" + name + "' (expected off, query-channel or adapter)");
}

DmsConfig DmsConfig::from_json(const json& j, const std::string& where) {
  DmsConfig c;
  if (!j.is_object()) fail(where, "expected a JSON object");
  bool any = false;
  for (const auto& [key, value] : j.items()) any = any || key.starts_with("dms_");
  if (!any) return c;
  c.mode = boolean(j, "dms_separate_alpha", false, where) ? DmsMode::Adapter : DmsMode::QueryChannel;
  c.alpha_scale = number(j, "dms_alpha_scale", c.alpha_scale, where);
  c.alpha_offset = number(j, "dms_initial_alpha_offset", c.alpha_offset, where);
  c.window = integer(j, "dms_window_size", c.window, where);
  c.eviction_disabled = boolean(j, "dms_disable_eviction", false, where);
  c.target_cr = number(j, "dms_cr", 0, where);
  if (const json* per = field(j, "dms_alpha_per")) {
    if (!per->is_string() || (*per != "head" && *per != "layer"))
      fail(where, "field 'dms_alpha_per' must be \"head\" or \"layer\" (got " + per->dump() + ")");
    c.per_layer = *per == "layer";
  }
  c.validate(where);
  return c;
}

json DmsConfig::to_json() const {
  if (mode == DmsMode::Off) return json::object();
  json j = {
      {"dms_separate_alpha", mode == DmsMode::Adapter},
      {"dms_alpha_scale", alpha_scale},
      {"dms_initial_alpha_offset", alpha_offset},
      {"dms_window_size", window},
      {"dms_alpha_per", per_layer ? "layer" : "head"},
      {"dms_disable_eviction", eviction_disabled},
  };
  if (target_cr > 0) j["dms_cr"] = target_cr;
  return j;
}

void DmsConfig::validate(const std::string& where) const {
  if (!std::isfinite(alpha_scale)) fail(where, "dms_alpha_scale must be a finite number");
  if (!std::isfinite(alpha_offset)) fail(where, "dms_initial_alpha_offset must be a finite number");
  if (window < 1 || window > kMaxWindow)
    fail(where, "dms_window_size must be between 1 and " + std::to_string(kMaxWindow) + " (got " +
                    std::to_string(window) + ")");
  if (!std::isfinite(target_cr) || target_cr < 0)
    fail(where, "dms_cr must be a positive number when given");
}

void DmsOverrides::apply(DmsConfig& c, const std::string& where) const {
  if (mode) c.mode = *mode;
  if (alpha_scale) c.alpha_scale = *alpha_scale;
  if (alpha_offset) c.alpha_offset = *alpha_offset;
  if (window) c.window = *window;
  if (per_layer) c.per_layer = *per_layer;
  if (eviction_disabled) c.eviction_disabled = *eviction_disabled;
  if (target_cr) c.target_cr = *target_cr;
  c.validate(where);
}

}  // namespace dms
