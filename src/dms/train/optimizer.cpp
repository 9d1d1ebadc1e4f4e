#include "dms/train/optimizer.h"

#include <cmath>

#include <ATen/core/grad_mode.h>

#include "dms/util/error.h"

namespace dms {

AdamW::AdamW(std::vector<at::Tensor> params, const AdamWOptions& options)
    : params_(std::move(params)), options_(options) {
  if (!(options.lr >= 0) || !(options.beta1 >= 0 && options.beta1 < 1) || !(options.beta2 >= 0 && options.beta2 < 1) ||
      !(options.eps > 0) || !(options.weight_decay >= 0))
    fail("AdamW", "needs lr >= 0, betas in [0, 1), eps > 0 and weight decay >= 0");
  for (const auto& p : params_) {
    exp_avg_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
    exp_avg_sq_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
  }
}

void AdamW::step() {
  at::NoGradGuard no_grad;
  ++steps_;
  const auto& o = options_;
  const double bias1 = 1 - std::pow(o.beta1, static_cast<double>(steps_));
  const double bias2_sqrt = std::sqrt(1 - std::pow(o.beta2, static_cast<double>(steps_)));
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor p = params_[i];
    const at::Tensor& g = p.grad();
    if (!g.defined()) continue;
    p.mul_(1 - o.lr * o.weight_decay);
    exp_avg_[i].lerp_(g, 1 - o.beta1);
    exp_avg_sq_[i].mul_(o.beta2).addcmul_(g, g, 1 - o.beta2);
    auto denom = (exp_avg_sq_[i].sqrt() / bias2_sqrt).add_(o.eps);
    p.addcdiv_(exp_avg_[i], denom, -o.lr / bias1);
  }
}

void AdamW::zero_grad() {
  for (auto& p : params_) p.mutable_grad() = at::Tensor();
}

void AdamW::restore(int64_t steps, const std::vector<at::Tensor>& exp_avg, const std::vector<at::Tensor>& exp_avg_sq) {
  if (steps < 0 || exp_avg.size() != params_.size() || exp_avg_sq.size() != params_.size())
    fail("AdamW", "state does not match the parameters");
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!exp_avg[i].sizes().equals(params_[i].sizes()) || !exp_avg_sq[i].sizes().equals(params_[i].sizes()))
      fail("AdamW", "state of parameter " + std::to_string(i) + " has the wrong shape");
    at::NoGradGuard no_grad;
    exp_avg_[i].copy_(exp_avg[i]);
    exp_avg_sq_[i].copy_(exp_avg_sq[i]);
  }
  steps_ = steps;
}

double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  at::NoGradGuard no_grad;
  double sum_sq = 0;
  for (const auto& p : params)
    if (p.grad().defined()) sum_sq += p.grad().to(at::kDouble).pow(2).sum().item<double>();
  const double norm = std::sqrt(sum_sq);
  const double scale = max_norm / (norm + 1e-6);
  if (scale < 1)
    for (const auto& p : params)
      if (p.grad().defined()) p.grad().mul_(scale);
  return norm;
}

}  // namespace dms
