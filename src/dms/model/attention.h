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
  // in the order the backend's step defines. Returns [T, n_heads, D].
  virtual at::Tensor attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) = 0;
};

}  // namespace dms
