// The logistic noise u = G1 - G2 (G1, G2 ~ Gumbel(0, 1)) of the relaxed DMS decisions
// (dms-spec section 4): z = (l + u) / tau.
//
// StepNoise draws it from a generator keyed by (seed, step, sequence, layer) alone, so it
// needs no state of its own to checkpoint, a resumed run draws what the uninterrupted one
// would have, and a step's sequences get the same noise however they are split across
// micro-batches and processes. FixedNoise replays given tensors (tests).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace dms {

class DecisionNoise {
 public:
  virtual ~DecisionNoise() = default;
  // Noise for layer `layer`'s decision logits [N, n_kv] (fp32); same shape, dtype and device.
  virtual at::Tensor sample(int64_t layer, const at::Tensor& logits) = 0;
};

class StepNoise : public DecisionNoise {
 public:
  // For the rows of `batch` sequences of `seq_len` tokens, the first being sequence
  // `first_sequence` of optimizer step `step`.
  StepNoise(uint64_t seed, int64_t step, int64_t first_sequence, int64_t batch, int64_t seq_len);
  at::Tensor sample(int64_t layer, const at::Tensor& logits) override;

 private:
  uint64_t seed_;
  int64_t step_, first_sequence_, batch_, seq_len_;
};

class FixedNoise : public DecisionNoise {
 public:
  explicit FixedNoise(std::vector<at::Tensor> per_layer) : per_layer_(std::move(per_layer)) {}
  at::Tensor sample(int64_t layer, const at::Tensor& logits) override;

 private:
  std::vector<at::Tensor> per_layer_;
};

// Logistic noise [rows, cols] in double from generator key `key`, as StepNoise draws it.
at::Tensor logistic_noise(uint64_t key, int64_t rows, int64_t cols);

}  // namespace dms
