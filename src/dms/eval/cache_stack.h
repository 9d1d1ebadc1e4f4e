// Several paged caches advanced by one forward pass: each cache owns a contiguous range of the
// forward's rows, so policies compared side by side share the model's weight reads (a decode
// step of a small batch costs about the same as one of a few times more rows).
//
//   CacheStack stack({&dense, &dms});
//   stack.begin_step({{{a, 256}}, {{b, 256}}});   // cache i's step; an empty one sits out
//   auto hidden = model.forward(tokens, stack.positions(), stack);
//   stack.end_step();
#pragma once
#include <ATen/ATen.h>

#include <vector>

#include "dms/cache/paged_kv_cache.h"
#include "dms/model/attention.h"

namespace dms::eval {

class CacheStack : public AttentionBackend {
 public:
  explicit CacheStack(std::vector<PagedKVCache*> caches);

  // steps[i] is cache i's step (PagedKVCache::begin_step); rows follow in cache order. If a
  // cache refuses its step, the caches already begun are aborted and the error propagates.
  void begin_step(const std::vector<std::vector<StepSequence>>& steps);
  const at::Tensor& positions() const { return positions_; }
  // First row and row count of cache i in this step.
  int64_t row0(size_t i) const { return row0_[i]; }
  int64_t rows(size_t i) const { return rows_[i]; }

  at::Tensor attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& evict_logits) override;
  void end_step();
  void abort_step();

 private:
  std::vector<PagedKVCache*> caches_;
  std::vector<int64_t> row0_, rows_;
  at::Tensor positions_;
};

}  // namespace dms::eval
