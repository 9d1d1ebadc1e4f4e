#include "dms/train/losses.h"

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>

#include "dms/util/error.h"

namespace dms {

double CompressionSchedule::ratio(int64_t step) const {
  const double progress = ramp_steps > 0 ? std::min(static_cast<double>(step) / ramp_steps, 1.0) : 1.0;
  return start + (end - start) * progress;
}

void CompressionSchedule::validate(const std::string& where) const {
  if (!(start >= 1) || !std::isfinite(start))
    fail(where, "the starting compression ratio must be at least 1 (got " + std::to_string(start) + ")");
  if (!(end >= 1) || !std::isfinite(end))
    fail(where, "the target compression ratio must be at least 1 (got " + std::to_string(end) + ")");
  if (ramp_steps < 0) fail(where, "the compression ramp must not have a negative number of steps");
}

at::Tensor teacher_log_probs(const at::Tensor& teacher_logits) {
  return at::log_softmax(teacher_logits.to(at::promote_types(teacher_logits.scalar_type(), at::kFloat)), -1);
}

namespace {

// sum_i w_i KL(p_s,i || p_t,i), a few rows at a time: a row's [V] intermediates stay small
// (a whole [N, V] tensor of a 2048-token row and a 49K vocabulary is 400 MB, and each op over it
// is a fresh allocation the kernel must zero). The gradient is formed in the same pass, from its
// closed form: d/dz_v of sum_u p_u (s_u - t_u) = p_v (s_v - t_v - KL).
struct Distillation : torch::autograd::Function<Distillation> {
  static constexpr int64_t kRows = 32;

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& student_logits,
                            const at::Tensor& teacher_log_probs, const at::Tensor& weights) {
    const auto ct = at::promote_types(student_logits.scalar_type(), teacher_log_probs.scalar_type());
    const bool grad = student_logits.requires_grad();
    at::Tensor total = at::zeros({}, weights.options().dtype(ct)), dlogits;
    if (grad) dlogits = at::empty_like(student_logits);
    for (int64_t r0 = 0; r0 < student_logits.size(0); r0 += kRows) {
      const int64_t n = std::min(kRows, student_logits.size(0) - r0);
      const at::Tensor s = at::log_softmax(student_logits.narrow(0, r0, n).to(ct), -1);
      const at::Tensor p = s.exp(), d = s.sub_(teacher_log_probs.narrow(0, r0, n));  // d: s - t, in s
      const at::Tensor kl = (p * d).sum(-1), w = weights.narrow(0, r0, n).to(ct);
      total.add_((kl * w).sum());
      if (grad) dlogits.narrow(0, r0, n).copy_(p.mul_(d.sub_(kl.unsqueeze(1))).mul_(w.unsqueeze(1)));
    }
    ctx->save_for_backward({dlogits});
    return total;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor dlogits = ctx->get_saved_variables()[0];
    return {dlogits.defined() ? dlogits * grads[0].to(dlogits.scalar_type()) : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor distillation_loss(const at::Tensor& student_logits, const at::Tensor& teacher_log_probs,
                             const at::Tensor& counted) {
  if (teacher_log_probs.requires_grad()) fail("distillation loss", "the teacher's log-probabilities are constants");
  const auto ct = at::promote_types(student_logits.scalar_type(), teacher_log_probs.scalar_type());
  const at::Tensor mask = counted.to(ct);
  return Distillation::apply(student_logits, teacher_log_probs, mask / mask.sum().clamp_min(1));
}

at::Tensor eviction_fraction(const std::vector<at::Tensor>& hard, const at::Tensor& counted) {
  if (hard.empty()) fail("eviction fraction", "no layer made decisions");
  // Counted in double: frac is a ratio of counts, reported exactly whatever the compute dtype.
  const auto mask = counted.to(at::kDouble).unsqueeze(1);
  at::Tensor flagged = (hard[0].to(at::kDouble) * mask).sum();
  for (size_t l = 1; l < hard.size(); ++l) flagged = flagged + (hard[l].to(at::kDouble) * mask).sum();
  const double slots = static_cast<double>(hard.size()) * hard[0].size(1) * counted.sum().item<double>();
  return flagged / std::max(slots, 1.0);
}

at::Tensor compression_loss(const at::Tensor& frac, double target_fraction) {
  return at::relu(target_fraction - frac);
}

}  // namespace dms
