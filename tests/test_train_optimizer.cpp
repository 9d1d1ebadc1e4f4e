// AdamW against libtorch's own torch::optim::AdamW (the C++ twin of torch.optim.AdamW) on the
// same gradients, gradient-norm clipping against its definition, and the optimizer state
// round trip.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include <cmath>

#include "dms/train/optimizer.h"

namespace dms::test {
namespace {

std::vector<at::Tensor> random_params(at::Generator& gen) {
  return {at::randn({5, 3}, gen, at::kDouble).requires_grad_(true), at::randn({7}, gen, at::kDouble).requires_grad_(true)};
}

std::vector<at::Tensor> clones(const std::vector<at::Tensor>& ps) {
  std::vector<at::Tensor> out;
  for (const auto& p : ps) out.push_back(p.detach().clone().requires_grad_(true));
  return out;
}

void set_grads(std::vector<at::Tensor>& ps, const std::vector<at::Tensor>& grads) {
  for (size_t i = 0; i < ps.size(); ++i) ps[i].mutable_grad() = grads[i].clone();
}

TEST(AdamW, MatchesLibtorchAdamW) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto ours = random_params(gen);
  auto theirs = clones(ours);
  const AdamWOptions o{.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
  AdamW adamw(ours, o);
  torch::optim::AdamW reference(theirs, torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(
                                            o.weight_decay));
  for (int step = 0; step < 25; ++step) {
    std::vector<at::Tensor> grads = {at::randn({5, 3}, gen, at::kDouble), at::randn({7}, gen, at::kDouble) * 0.01};
    set_grads(ours, grads);
    set_grads(theirs, grads);
    adamw.step();
    reference.step();
  }
  EXPECT_EQ(adamw.steps(), 25);
  // fp64; libtorch updates the first moment with mul/add instead of lerp: rounding only.
  for (size_t i = 0; i < ours.size(); ++i)
    EXPECT_LT((ours[i] - theirs[i]).abs().max().item<double>(), 1e-12) << "parameter " << i;
}

TEST(AdamW, DefaultsAreTheReferenceRecipe) {
  const AdamWOptions o;
  EXPECT_EQ(o.lr, 3e-5);
  EXPECT_EQ(o.beta1, 0.9);
  EXPECT_EQ(o.beta2, 0.95);
  EXPECT_EQ(o.weight_decay, 0.0);
}

TEST(AdamW, RestoredStateContinuesBitForBit) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  auto a = random_params(gen);
  AdamW first(a, {.lr = 1e-2});
  std::vector<std::vector<at::Tensor>> grads;
  for (int i = 0; i < 6; ++i) grads.push_back({at::randn({5, 3}, gen, at::kDouble), at::randn({7}, gen, at::kDouble)});
  for (int i = 0; i < 3; ++i) set_grads(a, grads[i]), first.step();
  auto b = clones(a);
  AdamW second(b, {.lr = 1e-2});
  second.restore(first.steps(), first.exp_avg(), first.exp_avg_sq());
  for (int i = 3; i < 6; ++i) {
    set_grads(a, grads[i]), first.step();
    set_grads(b, grads[i]), second.step();
  }
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i], b[i]));
}

TEST(ClipGradNorm, ScalesToTheLimitOnlyAboveIt) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  auto ps = random_params(gen);
  const std::vector<at::Tensor> grads = {at::randn({5, 3}, gen, at::kDouble), at::randn({7}, gen, at::kDouble)};
  double sum_sq = 0;
  for (const auto& g : grads)
    for (int64_t i = 0; i < g.numel(); ++i) sum_sq += std::pow(g.reshape({-1})[i].item<double>(), 2);
  const double norm = std::sqrt(sum_sq);

  set_grads(ps, grads);
  EXPECT_NEAR(clip_grad_norm(ps, 1.0), norm, 1e-12);
  const double scale = 1.0 / (norm + 1e-6);
  for (size_t i = 0; i < ps.size(); ++i) EXPECT_TRUE(at::allclose(ps[i].grad(), grads[i] * scale, 1e-14, 0));

  set_grads(ps, grads);
  EXPECT_NEAR(clip_grad_norm(ps, 2 * norm), norm, 1e-12);
  for (size_t i = 0; i < ps.size(); ++i) EXPECT_TRUE(at::equal(ps[i].grad(), grads[i])) << "below the limit: unchanged";
}

}  // namespace
}  // namespace dms::test
