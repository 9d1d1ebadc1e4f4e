#include "dms/cache/budget_policy.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "dms/util/error.h"

namespace dms {
namespace {

// The head's cached keys and the step's keys, except those already leaving visibility, in
// position order; scores 0.
std::vector<Candidate> budget_candidates(const HeadStep& step, const HeadDecision& d) {
  const int64_t live = step.head.live(), next_pos = step.first_pos + step.n_new;
  const int32_t* pos = step.head.pos();
  const int32_t* evict_at = step.head.evict_at();
  std::vector<Candidate> c;
  c.reserve(live + step.n_new);
  for (int64_t s = 0; s < live; ++s) {
    const int32_t until = s == step.head.newest_slot() ? d.newest_evict_at : evict_at[s];
    if (until > next_pos) c.push_back({pos[s], s, 0.0});
  }
  std::sort(c.begin(), c.end(), [](const Candidate& a, const Candidate& b) { return a.pos < b.pos; });
  for (int64_t t = 0; t < step.n_new; ++t)
    if (d.step_evict_at[t] > next_pos) c.push_back({step.first_pos + t, live + t, 0.0});
  return c;
}

// Drops candidates until at most `keep` remain: lowest score first, the older key on ties.
// Throws Error if that would drop a protected one (a budget below what the policy protects;
// Budget::validate rules it out).
void drop_lowest(std::vector<Candidate>& c, int64_t keep, const HeadStep& step, HeadDecision& d) {
  const int64_t excess = static_cast<int64_t>(c.size()) - keep;
  if (excess <= 0) return;
  auto lower = [](const Candidate& a, const Candidate& b) {
    return a.score < b.score || (a.score == b.score && a.pos < b.pos);
  };
  std::nth_element(c.begin(), c.begin() + (excess - 1), c.end(), lower);
  const int64_t live = step.head.live();
  for (int64_t i = 0; i < excess; ++i) {
    if (c[i].score == kProtected)
      fail("kv cache", "budget of " + std::to_string(keep) + " keys is below what the policy protects");
    if (c[i].index < live)
      d.drop_cached.push_back(static_cast<int32_t>(c[i].index));
    else
      d.drop_step[c[i].index - live] = 1;
  }
}

}  // namespace

int64_t Budget::limit(int64_t seen) const {
  if (tokens > 0) return tokens;
  return std::max(min_tokens, static_cast<int64_t>(std::ceil(static_cast<double>(seen) / compression_ratio)));
}

void Budget::validate(const std::string& policy, int64_t protect) const {
  const std::string where = policy + " policy";
  if ((tokens > 0) == (compression_ratio > 0))
    fail(where, "give the budget as either a token count or a compression ratio, not " +
                    std::string(tokens > 0 ? "both" : "neither"));
  if (compression_ratio > 0 && !(compression_ratio >= 1.0))
    fail(where, "compression ratio must be at least 1, got " + std::to_string(compression_ratio));
  if (tokens <= 0 && min_tokens < 1) fail(where, "minimum budget must be at least 1 token");
  const int64_t smallest = tokens > 0 ? tokens : min_tokens;
  if (smallest < protect)
    fail(where, "a budget of " + std::to_string(smallest) + " tokens cannot hold the " + std::to_string(protect) +
                    " tokens this policy always keeps");
}

BudgetPolicy::BudgetPolicy(std::string name, const Budget& budget, int64_t protect)
    : name_(std::move(name)), budget_(budget) {
  budget_.validate(name_, protect);
}

void BudgetPolicy::after_attention(const HeadStep& step, HeadDecision& d) const {
  const int64_t keep = budget_.limit(step.first_pos + step.n_new);
  auto c = budget_candidates(step, d);
  if (static_cast<int64_t>(c.size()) <= keep) return;
  score(step, d, keep, c);
  drop_lowest(c, keep, step, d);
}

int64_t BudgetPolicy::max_live_after(const HeadCache& head, int64_t first_pos, int64_t n_new) const {
  return std::min(head.live() + n_new, budget_.limit(first_pos + n_new));
}

// The keys over the budget (drop_lowest) and any whose window ends with the step.
int64_t BudgetPolicy::max_freed(const HeadCache& head, int64_t first_pos, int64_t n_new) const {
  const int64_t over = std::max<int64_t>(0, head.live() + n_new - budget_.limit(first_pos + n_new));
  return std::min(head.live(), over + head.expiring_by(static_cast<int32_t>(first_pos + n_new)));
}

}  // namespace dms
