#include "dms/eval/cache_stack.h"

#include "dms/util/error.h"

namespace dms::eval {

CacheStack::CacheStack(std::vector<PagedKVCache*> caches)
    : caches_(std::move(caches)), row0_(caches_.size(), 0), rows_(caches_.size(), 0) {}

void CacheStack::begin_step(const std::vector<std::vector<StepSequence>>& steps) {
  if (steps.size() != caches_.size()) fail("cache stack", "one step per cache expected");
  std::vector<at::Tensor> positions;
  int64_t row = 0;
  try {
    for (size_t i = 0; i < caches_.size(); ++i) {
      row0_[i] = row;
      rows_[i] = 0;
      if (steps[i].empty()) continue;
      caches_[i]->begin_step(steps[i]);
      rows_[i] = caches_[i]->step_rows();
      row += rows_[i];
      positions.push_back(caches_[i]->step_positions());
    }
  } catch (...) {
    abort_step();
    throw;
  }
  if (positions.empty()) fail("cache stack", "a step with no rows");
  positions_ = at::cat(positions);
}

at::Tensor CacheStack::attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& evict_logits) {
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < caches_.size(); ++i) {
    if (rows_[i] == 0) continue;
    const int64_t r = row0_[i], n = rows_[i];
    out.push_back(caches_[i]->attend(layer, q.narrow(0, r, n), k.narrow(0, r, n), v.narrow(0, r, n),
                                     evict_logits.defined() ? evict_logits.narrow(0, r, n) : at::Tensor()));
  }
  return out.size() == 1 ? out.front() : at::cat(out);
}

void CacheStack::end_step() {
  for (size_t i = 0; i < caches_.size(); ++i)
    if (rows_[i] > 0) caches_[i]->end_step();
}

void CacheStack::abort_step() {
  for (PagedKVCache* c : caches_)
    if (c->in_step()) c->abort_step();
}

}  // namespace dms::eval
