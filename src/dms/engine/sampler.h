// Picks the next token from a row of logits: greedy, or sampled with temperature, top-k,
// top-p and min-p (applied in that order, as Hugging Face's generate does), from a seeded RNG.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <random>

namespace dms {

struct SamplingParams {
  double temperature = 0.0;  // 0: greedy (argmax)
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  double min_p = 0.0;        // 0: off; keeps tokens with p >= min_p * max p
  uint64_t seed = 0;

  // Throws Error naming the flag when a value is out of range.
  void validate() const;
};

class Sampler {
 public:
  explicit Sampler(SamplingParams params);
  // logits: [V] fp32. Returns the chosen token id.
  int32_t sample(const at::Tensor& logits);
  // The distribution sample() draws from (after every filter), [V] fp32 summing to 1.
  at::Tensor probabilities(const at::Tensor& logits) const;
  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace dms
