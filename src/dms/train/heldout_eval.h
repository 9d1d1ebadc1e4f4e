// Held-out evaluation of a retrofit: the student with hard decisions (a key is evicted when its
// decision logit is above 0, as at inference) against the teacher, on rows the trainer never
// sees.
//
//   HeldoutResult r = evaluate_heldout(trainer, batches);
//   r.kl     mean over counted rows of KL(p_teacher || p_student), nats per token
//   r.frac   share of flagged keys over layers, KV heads and counted rows
#pragma once
#include <cstdint>
#include <vector>

#include "dms/train/decision_noise.h"
#include "dms/train/train_batch.h"
#include "dms/train/trainer.h"

namespace dms {

struct HeldoutResult {
  double kl = 0;
  double frac = 0;
  int64_t tokens = 0;  // counted rows
};

// Noise that saturates every relaxed decision to exactly 0 or 1 by the logit's own sign, so the
// training forward's soft mask is the hard mask of the inference cache (a flagged key's score
// gets log(1 - a_soft) <= -1e4, nothing after softmax).
class HardDecisions : public DecisionNoise {
 public:
  at::Tensor sample(int64_t layer, const at::Tensor& logits) override;
};

// Throws Error when `batches` is empty.
HeldoutResult evaluate_heldout(const Trainer& trainer, const std::vector<TrainBatch>& batches);

}  // namespace dms
