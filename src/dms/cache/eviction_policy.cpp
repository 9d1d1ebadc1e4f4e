// Choosing a policy by name, as the command line does: the one registry of policy names.
#include "dms/cache/eviction_policy.h"

#include <algorithm>

#include "dms/util/error.h"

namespace dms {
namespace {

struct Registered {
  std::string name;
  bool budgeted;
  std::unique_ptr<EvictionPolicy> (*make)(const PolicyOptions&);
};

const std::vector<Registered>& registry() {
  static const std::vector<Registered> r = {
      {"dms", false, [](const PolicyOptions& o) { return make_dms_policy(o.dms); }},
      {"dense", false, [](const PolicyOptions&) { return make_dense_policy(); }},
      {"streaming", true, [](const PolicyOptions& o) { return make_streaming_policy({o.budget, o.sinks}); }},
      {"h2o", true, [](const PolicyOptions& o) { return make_h2o_policy({o.budget, o.recent_share}); }},
      {"tova", true, [](const PolicyOptions& o) { return make_tova_policy({o.budget}); }},
  };
  return r;
}

std::vector<std::string> names_where(bool only_budgeted) {
  std::vector<std::string> out;
  for (const auto& r : registry())
    if (r.budgeted || !only_budgeted) out.push_back(r.name);
  return out;
}

}  // namespace

std::unique_ptr<EvictionPolicy> make_policy(const std::string& name, const PolicyOptions& o) {
  for (const auto& r : registry())
    if (r.name == name) return r.make(o);
  fail("--policy", "unknown eviction policy '" + name + "' (" + joined(policy_names()) + ")");
}

const std::vector<std::string>& policy_names() {
  static const std::vector<std::string> names = names_where(false);
  return names;
}

const std::vector<std::string>& budget_policy_names() {
  static const std::vector<std::string> names = names_where(true);
  return names;
}

bool is_budget_policy(const std::string& name) {
  const auto& b = budget_policy_names();
  return std::find(b.begin(), b.end(), name) != b.end();
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace dms
