// AdamW (decoupled weight decay, as torch.optim.AdamW computes it) with its state in plain
// tensors, so a checkpoint can hold it and a resumed run continue bit for bit, and global
// gradient-norm clipping.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace dms {

// The reference recipe's defaults (dms-spec section 4).
struct AdamWOptions {
  double lr = 3e-5;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

class AdamW {
 public:
  // `params` are leaf tensors that receive gradients; the optimizer updates them in place.
  AdamW(std::vector<at::Tensor> params, const AdamWOptions& options);

  // One update from each parameter's .grad() (a parameter without one is left alone, its
  // moments unchanged).
  void step();
  void zero_grad();

  int64_t steps() const { return steps_; }
  // The moments, one per parameter in the constructor's order; zero before the first step.
  const std::vector<at::Tensor>& exp_avg() const { return exp_avg_; }
  const std::vector<at::Tensor>& exp_avg_sq() const { return exp_avg_sq_; }
  // Replaces the state (from a checkpoint); shapes must match the parameters.
  void restore(int64_t steps, const std::vector<at::Tensor>& exp_avg, const std::vector<at::Tensor>& exp_avg_sq);

  const AdamWOptions& options() const { return options_; }

 private:
  std::vector<at::Tensor> params_;
  AdamWOptions options_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  int64_t steps_ = 0;
};

// Scales the gradients of `params` so their global L2 norm is at most max_norm (by
// max_norm / (norm + 1e-6), as torch.nn.utils.clip_grad_norm_ does); returns the norm
// before clipping.
double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

}  // namespace dms
