#include "dms/train/decision_noise.h"

#include <ATen/CPUGeneratorImpl.h>

#include <limits>

#include "dms/util/error.h"

namespace dms {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t mix(uint64_t h, int64_t v) { return splitmix64(h ^ splitmix64(static_cast<uint64_t>(v))); }

// Gumbel(0, 1) samples -log(-log U); U is kept off 0, where the sample would be -inf.
at::Tensor gumbel(at::Generator& gen, int64_t rows, int64_t cols) {
  auto u = at::rand({rows, cols}, gen, at::kDouble).clamp_min_(std::numeric_limits<double>::min());
  return -at::log(-at::log(u));
}

}  // namespace

at::Tensor logistic_noise(uint64_t key, int64_t rows, int64_t cols) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(key);
  auto g1 = gumbel(gen, rows, cols);
  auto g2 = gumbel(gen, rows, cols);
  return g1 - g2;
}

StepNoise::StepNoise(uint64_t seed, int64_t step, int64_t first_sequence, int64_t batch, int64_t seq_len)
    : seed_(seed), step_(step), first_sequence_(first_sequence), batch_(batch), seq_len_(seq_len) {}

at::Tensor StepNoise::sample(int64_t layer, const at::Tensor& logits) {
  if (logits.size(0) != batch_ * seq_len_) fail("decision noise", "logits do not have one row per token of the batch");
  const int64_t n_kv = logits.size(1);
  std::vector<at::Tensor> parts;
  for (int64_t b = 0; b < batch_; ++b) {
    const uint64_t key = mix(mix(mix(splitmix64(seed_), step_), first_sequence_ + b), layer);
    parts.push_back(logistic_noise(key, seq_len_, n_kv));
  }
  return at::cat(parts).to(logits.options());
}

at::Tensor FixedNoise::sample(int64_t layer, const at::Tensor& logits) {
  if (layer >= static_cast<int64_t>(per_layer_.size()) || !per_layer_[layer].sizes().equals(logits.sizes()))
    fail("fixed decision noise", "no noise of shape [rows, n_kv] for layer " + std::to_string(layer));
  return per_layer_[layer].to(logits.options());
}

}  // namespace dms
