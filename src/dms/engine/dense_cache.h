// Dense KV cache for one sequence: every key and value kept, storage grown geometrically.
// The reference the compressed caches are measured against.
#pragma once
#include <ATen/ATen.h>

#include <vector>

#include "dms/model/attention.h"
#include "dms/model/config.h"

namespace dms {

class DenseKVCache : public AttentionBackend {
 public:
  DenseKVCache(const ModelConfig& config, at::ScalarType dtype);

  // Declares the next step's T tokens (positions length() .. length()+T-1). Call before forward.
  void begin_step(int64_t T);
  // Makes the step's keys permanent. Call after forward.
  void end_step();

  // Keeps every key: evict_logits are ignored.
  at::Tensor attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& evict_logits) override;

  int64_t length() const { return length_; }
  // Forgets every token from position `length` on (storage is kept for reuse).
  void truncate(int64_t length);
  int64_t bytes_held() const;  // bytes of K and V storage actually allocated
  void clear();

 private:
  void reserve(int64_t tokens);

  int64_t n_kv_, head_dim_, group_;
  at::ScalarType dtype_;
  std::vector<at::Tensor> k_, v_;   // per layer: [n_kv, capacity, D]
  int64_t capacity_ = 0;
  int64_t length_ = 0;
  int64_t step_ = 0;
};

// Softmax attention of q [T, nq, D] over k, v [n_kv, S, D] where query t sees keys
// 0 .. first_pos + t (causal with `first_pos` earlier keys). Computed in fp32.
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t first_pos);

}  // namespace dms
