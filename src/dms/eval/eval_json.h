// The evaluation report as JSON, in the layout docs/EVAL.md documents (schema "dms-eval/1").
#pragma once
#include <nlohmann/json.hpp>

#include "dms/eval/evaluation.h"

namespace dms::eval {

constexpr const char* kEvalSchema = "dms-eval/1";

// `header` holds what the caller knows and the report does not (model, data file, settings);
// its members are copied to the top level first.
nlohmann::json report_json(const EvalReport& report, const nlohmann::json& header);

}  // namespace dms::eval
