#include "dms/train/losses.h"

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

at::Tensor distillation_loss(const at::Tensor& student_logits, const at::Tensor& teacher_log_probs,
                             const at::Tensor& counted) {
  const auto ct = at::promote_types(student_logits.scalar_type(), teacher_log_probs.scalar_type());
  auto student = at::log_softmax(student_logits.to(ct), -1);
  auto per_row = (student.exp() * (student - teacher_log_probs.to(ct))).sum(-1);  // [N]
  auto mask = counted.to(ct);
  return (per_row * mask).sum() / mask.sum().clamp_min(1);
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
