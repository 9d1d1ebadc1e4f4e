// The attention backend of the training forward (dms-spec section 4): dense causal attention
// within each sequence and each document of a TrainBatch, plus the soft DMS mask. For query i
// and key j of KV head g in the same document:
//
//   j > i              masked
//   i - j <= window    score = q.k / sqrt(D)
//   i - j >  window    score = q.k / sqrt(D) + log(1 - a_soft[j+1, g])  (= log sigmoid(-z[j+1, g]))
//
// with z = (l + u) / tau from the decision logits l the forward hands over and the noise u,
// a_soft = sigmoid(z) and a_hard = 1[a_soft > 0.5] carrying a_soft's gradient (straight
// through). The last key of a document has no decision: no later query of its document is
// that far away. Without decision logits (a model without decision heads, or the teacher,
// whose eviction is disabled) every key stays visible: plain dense attention.
//
//   TrainingAttention attn(batch, {.window = 64, .tau = 0.1, .per_layer = false}, &noise);
//   auto hidden = transformer.forward(batch.tokens, batch.positions, attn);
//   attn.decisions()[layer].hard   // [B*T, n_kv], for the eviction fraction
//
// Scores and softmax run in fp32 (fp64 for fp64 inputs); the output has q's dtype. Rows longer
// than options.block are attended block by block (blockwise_attention.h), never holding T x T.
#pragma once
#include <ATen/ATen.h>

#include <vector>

#include "dms/model/attention.h"
#include "dms/train/decision_noise.h"
#include "dms/train/train_batch.h"

namespace dms {

struct TrainingAttentionOptions {
  int64_t window = 512;    // dms_window_size
  double tau = 0.1;        // temperature of the relaxed decision
  bool per_layer = false;  // dms_alpha_per layer: every KV head follows head 0, noise included
  // Rows longer than this run the blockwise attention (blockwise_attention.h) with blocks of this
  // many queries and keys; shorter rows, or 0, the dense T x T scores (the same result).
  int64_t block = 256;
};

// One layer's relaxed decisions, [B*T, n_kv]: row t decides about key t-1.
struct LayerDecisions {
  at::Tensor z;     // (l + u) / tau
  at::Tensor soft;  // a_soft = sigmoid(z)
  at::Tensor hard;  // a_hard in the forward, a_soft's gradient in the backward
};

class TrainingAttention : public AttentionBackend {
 public:
  // `noise` (not owned) must outlive the forward; it is only read for layers that decide.
  TrainingAttention(const TrainBatch& batch, const TrainingAttentionOptions& options, DecisionNoise* noise);

  at::Tensor attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& evict_logits) override;

  // Indexed by layer; entries stay undefined for layers attended without decision logits.
  const std::vector<LayerDecisions>& decisions() const { return decisions_; }

 private:
  // Additive mask [B, 1, 1, T, T] in `dtype`: 0 where query i may see key j (same document,
  // j <= i), -inf elsewhere. Made once per batch, on first use.
  const at::Tensor& visibility_bias(at::ScalarType dtype, const at::Device& device);

  int64_t B_, T_;
  TrainingAttentionOptions options_;
  DecisionNoise* noise_;
  at::Tensor documents_;  // [B, T]
  at::Tensor visibility_bias_;
  at::Tensor far_;        // [T, T] bool: i - j > window
  std::vector<LayerDecisions> decisions_;
};

}  // namespace dms
