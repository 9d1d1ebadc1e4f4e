#include "dms/engine/sampler.h"

#include <cmath>

#include "dms/kernels/cpu/vector_math.h"
#include "dms/util/error.h"

namespace dms {

void SamplingParams::validate() const {
  if (!(temperature >= 0)) fail("--temperature", "must be >= 0");
  if (top_k < 0) fail("--top-k", "must be >= 0");
  if (!(top_p > 0 && top_p <= 1)) fail("--top-p", "must be in (0, 1]");
  if (!(min_p >= 0 && min_p <= 1)) fail("--min-p", "must be in [0, 1]");
}

namespace {

// The first index of the largest logit, or of the first NaN (as at::argmax), in one pass.
int64_t greedy_token(const at::Tensor& logits) {
  if (logits.dim() != 1 || logits.scalar_type() != at::kFloat || !logits.is_contiguous() || logits.numel() == 0)
    return logits.argmax().item<int64_t>();
  // Two passes instead of one with a branch per logit: the largest value, four lanes at a time
  // (any NaN noticed), then the first index that holds it.
  const float* p = logits.const_data_ptr<float>();
  const int64_t n = logits.numel();
  cpu::f32x4 lanes = cpu::f32x4{} + p[0];
  cpu::i32x4 nan_lanes{};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const cpu::f32x4 v = cpu::load4(p + i);
    lanes = v > lanes ? v : lanes;
    nan_lanes |= v != v;
  }
  float top = p[0];
  bool nan = false;
  for (int j = 0; j < 4; ++j) top = lanes[j] > top ? lanes[j] : top, nan |= nan_lanes[j] != 0;
  for (; i < n; ++i) top = p[i] > top ? p[i] : top, nan |= p[i] != p[i];
  int64_t best = 0;
  if (nan) {
    while (!std::isnan(p[best])) ++best;  // the first NaN, as at::argmax picks it
  } else {
    while (p[best] != top) ++best;
  }
  return best;
}

}  // namespace

Sampler::Sampler(SamplingParams params) : params_(params), rng_(params.seed) { params_.validate(); }

at::Tensor Sampler::probabilities(const at::Tensor& logits) const {
  const int64_t V = logits.size(0);
  if (params_.temperature == 0) {
    auto p = at::zeros({V}, at::kFloat);
    p[greedy_token(logits)] = 1.0f;
    return p;
  }
  auto scaled = logits.to(at::kFloat) / params_.temperature;
  if (params_.top_k > 0 && params_.top_k < V) {
    auto kth = std::get<0>(scaled.topk(params_.top_k)).min();
    scaled = scaled.masked_fill(scaled < kth, -std::numeric_limits<float>::infinity());
  }
  auto probs = at::softmax(scaled, 0);
  if (params_.top_p < 1) {
    // Keep the smallest prefix of tokens, by falling probability, whose mass reaches top_p. It
    // lies among the few most likely tokens: sort only the top k, with k grown until the prefix
    // ends inside them (sorting the whole vocabulary took most of a sampled step).
    for (int64_t k = std::min<int64_t>(V, 64);; k = std::min<int64_t>(V, 4 * k)) {
      auto [sorted, order] = probs.topk(k, 0, /*largest=*/true, /*sorted=*/true);
      auto mass_before = sorted.cumsum(0) - sorted;
      if (k < V && mass_before[k - 1].item<float>() < params_.top_p) continue;
      auto keep = order.masked_select(mass_before < params_.top_p);
      probs = at::zeros_like(probs).index_copy_(0, keep, probs.index_select(0, keep));
      break;
    }
  }
  if (params_.min_p > 0) probs = probs.masked_fill(probs < probs.max() * params_.min_p, 0);
  return probs / probs.sum();
}

int32_t Sampler::sample(const at::Tensor& logits) {
  if (params_.temperature == 0) return static_cast<int32_t>(greedy_token(logits));
  auto probs = probabilities(logits).contiguous();
  const float* p = probs.data_ptr<float>();
  const int64_t V = probs.size(0);
  // Inverse-CDF draw; the fallback is the last token with mass, for rounding at the top end.
  double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  double acc = 0;
  int64_t last = 0;
  for (int64_t i = 0; i < V; ++i) {
    if (p[i] <= 0) continue;
    last = i;
    acc += p[i];
    if (u < acc) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(last);
}

}  // namespace dms
