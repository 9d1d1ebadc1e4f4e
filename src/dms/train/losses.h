// The retrofit losses of dms-spec section 4:
//
//   L_distill  = mean over counted (non-padding) rows of KL(p_student || p_teacher), temperature 1
//   frac       = mean of a_hard over layers, KV heads and counted rows
//   CR(s)      = CR_start + (CR_end - CR_start) * min(s / S_ramp, 1)
//   L_compress = max(0, (1 - 1 / CR(s)) - frac)      (one-sided: it only pushes evictions up)
//   L          = L_distill + L_compress
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dms {

// The linear compression-ratio schedule over optimizer steps.
struct CompressionSchedule {
  double start = 1.0;
  double end = 8.0;
  int64_t ramp_steps = 0;  // 0: the end ratio from the first step

  double ratio(int64_t step) const;
  // The eviction fraction the ratio asks for: 1 - 1 / CR(step).
  double target_fraction(int64_t step) const { return 1.0 - 1.0 / ratio(step); }
  // Throws Error naming `where` for a ratio below 1 or a negative ramp.
  void validate(const std::string& where) const;
};

// Teacher log-probabilities from its logits [N, V]: fp32 (fp64 for fp64 logits).
at::Tensor teacher_log_probs(const at::Tensor& teacher_logits);

// L_distill: student_logits [N, V], teacher_log_probs [N, V] (constants: no gradient flows to
// them), counted [N] bool; in the wider of the two dtypes, differentiable in student_logits.
at::Tensor distillation_loss(const at::Tensor& student_logits, const at::Tensor& teacher_log_probs,
                             const at::Tensor& counted);

// frac: hard decisions [N, n_kv] of every layer, counted [N] bool.
at::Tensor eviction_fraction(const std::vector<at::Tensor>& hard, const at::Tensor& counted);

// L_compress for the scalar frac.
at::Tensor compression_loss(const at::Tensor& frac, double target_fraction);

}  // namespace dms
