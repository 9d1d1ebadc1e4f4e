// The seam between the model and whatever stores keys and values. The model computes
// q, k, v (after RoPE) for the tokens of one step; the backend stores k and v where its
// cache layout says and returns each query's attention output over the keys it may see.
#pragma once
#include <ATen/ATen.h>

namespace dms {

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;
  // q: [T, n_heads, D], k and v: [T, n_kv_heads, D], for the T tokens of the current step
  // in the order the backend's step defines. evict_logits: [T, n_kv_heads] fp32, the DMS
  // decision logits l[t, g] (docs: dms-spec section 1), undefined when the model has no
  // decision heads. Returns [T, n_heads, D]. The inputs may be the forward's buffers, which the
  // next layer overwrites: a backend that keeps one past the call keeps a copy.
  virtual at::Tensor attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& evict_logits) = 0;
};

}  // namespace dms
