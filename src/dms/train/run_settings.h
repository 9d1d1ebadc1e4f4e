// What defines a retrofit run: a resumed run must agree on all of it, or it would not continue
// the same loss curve. The steps, the checkpoint and evaluation intervals, the threads and the
// device are not part of it (a run resumed on another device continues the curve to rounding,
// not bit for bit).
//
// The settings are a flat JSON object saved in the run's checkpoint index. Its keys are those
// the first builds recorded ("window", "alpha_scale", "alpha_offset", "alpha_per", ...), whatever
// the command-line options are called now, so a run saved by any build resumes.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dms {

struct RunSettings {
  nlohmann::json json;  // an object: key -> value (null: taken from the starting adapter)

  // Each key that differs between this run and `saved`, as "key (saved X, now Y)"; a key only
  // one side has is a difference too ("none" on the other side). Empty when they agree.
  std::vector<std::string> differences(const nlohmann::json& saved) const;
};

}  // namespace dms
