// The part the budget policies (streaming, h2o, tova) share: after a step, every key the head
// could keep is a candidate; if there are more than the budget, the lowest-scored ones that the
// policy does not protect are dropped.
#pragma once
#include <cstdint>
#include <limits>
#include <vector>

#include "dms/cache/eviction_policy.h"

namespace dms {

struct Candidate {
  int64_t pos;
  int64_t index;  // < head.live(): a cached slot; otherwise step key index - head.live()
  double score;   // lowest dropped first; kProtected never
};

constexpr double kProtected = std::numeric_limits<double>::infinity();

// The head's cached keys and the step's keys, except those already leaving visibility, in
// position order; scores 0.
std::vector<Candidate> budget_candidates(const HeadStep& step, const HeadDecision& d);

// Drops candidates until at most `keep` remain: lowest score first, the older key on ties.
// Throws Error if that would drop a protected one (a budget below what the policy protects;
// Budget::validate rules it out).
void drop_lowest(std::vector<Candidate>& candidates, int64_t keep, const HeadStep& step, HeadDecision& d);

}  // namespace dms
