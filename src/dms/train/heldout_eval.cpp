#include "dms/train/heldout_eval.h"

#include <ATen/core/grad_mode.h>

#include "dms/train/training_attention.h"
#include "dms/util/error.h"

namespace dms {

at::Tensor HardDecisions::sample(int64_t, const at::Tensor& logits) {
  // With tau 1 below, z = l +- 1e4: sigmoid is exactly 0 or 1 in fp32 and fp64.
  return at::where(logits > 0, 1e4, -1e4).to(logits.options());
}

HeldoutResult evaluate_heldout(const Trainer& trainer, const std::vector<TrainBatch>& batches) {
  if (batches.empty()) fail("held-out evaluation", "no held-out rows to evaluate on");
  at::NoGradGuard no_grad;
  const ModelConfig& c = trainer.student_config();
  const Transformer student = trainer.student();
  double kl_sum = 0, flagged = 0, slots = 0;
  int64_t tokens = 0;
  for (const TrainBatch& given : batches) {
    const TrainBatch batch = given.to(trainer.device());
    const at::Tensor teacher = trainer.teacher_log_probs(batch);
    HardDecisions hard;
    TrainingAttention attn(batch, {.window = c.dms.window, .tau = 1.0, .per_layer = c.dms.per_layer}, &hard);
    const at::Tensor hidden = student.forward(batch.tokens, batch.positions, attn);
    const at::Tensor log_p = at::log_softmax(student.logits(hidden), -1);
    const at::Tensor mask = batch.counted.to(at::kDouble);
    const at::Tensor per_row = (teacher.exp() * (teacher - log_p)).sum(-1).to(at::kDouble);
    kl_sum += (per_row * mask).sum().item<double>();
    for (const auto& d : attn.decisions())
      if (d.hard.defined()) {
        flagged += ((d.hard > 0.5).to(at::kDouble) * mask.unsqueeze(1)).sum().item<double>();
        slots += mask.sum().item<double>() * d.hard.size(1);
      }
    tokens += batch.counted_rows();
  }
  return {.kl = kl_sum / static_cast<double>(tokens), .frac = slots > 0 ? flagged / slots : 0.0, .tokens = tokens};
}

}  // namespace dms
