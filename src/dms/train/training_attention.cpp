#include "dms/train/training_attention.h"

#include <cmath>
#include <limits>

#include "dms/train/blockwise_attention.h"
#include "dms/util/error.h"

namespace dms {

TrainingAttention::TrainingAttention(const TrainBatch& batch, const TrainingAttentionOptions& options,
                                     DecisionNoise* noise)
    : B_(batch.batch), T_(batch.seq_len), options_(options), noise_(noise),
      documents_(batch.documents.view({batch.batch, batch.seq_len})) {
  if (options.tau <= 0 || !std::isfinite(options.tau)) fail("training attention", "tau must be a positive number");
  if (options.window < 0) fail("training attention", "the window must not be negative");
  if (options.block < 0) fail("training attention", "the block length must not be negative");
}

const at::Tensor& TrainingAttention::visibility_bias(at::ScalarType dtype, const at::Device& device) {
  if (!visibility_bias_.defined() || visibility_bias_.scalar_type() != dtype) {
    auto docs = documents_.to(device);
    auto same_document = docs.unsqueeze(2) == docs.unsqueeze(1);                       // [B, T(i), T(j)]
    auto causal = at::ones({T_, T_}, at::TensorOptions().dtype(at::kBool).device(device)).tril();
    visibility_bias_ = at::zeros({B_, T_, T_}, at::TensorOptions().dtype(dtype).device(device))
                           .masked_fill_((same_document & causal).logical_not(), -std::numeric_limits<double>::infinity())
                           .view({B_, 1, 1, T_, T_});
    auto i = at::arange(T_, at::TensorOptions().dtype(at::kLong).device(device));
    far_ = (i.unsqueeze(1) - i.unsqueeze(0)) > options_.window;
  }
  return visibility_bias_;
}

at::Tensor TrainingAttention::attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const at::Tensor& evict_logits) {
  const int64_t N = q.size(0), n_heads = q.size(1), D = q.size(2), n_kv = k.size(1), G = n_heads / n_kv;
  if (N != B_ * T_) fail("training attention", "the forward's rows are not the batch's B*T rows");
  const auto ct = at::promote_types(q.scalar_type(), at::kFloat);
  auto qg = q.to(ct).view({B_, T_, n_kv, G, D}).permute({0, 2, 3, 1, 4});               // [B, n_kv, G, T, D]
  auto kg = k.to(ct).view({B_, T_, n_kv, D}).permute({0, 2, 1, 3});                    // [B, n_kv, T, D]
  auto vg = v.to(ct).view({B_, T_, n_kv, D}).permute({0, 2, 1, 3});

  at::Tensor penalty;  // [B, n_kv, T]: what key j adds to the scores of queries more than `window` after it
  if (evict_logits.defined()) {
    if (!noise_) fail("training attention", "decision logits without a noise source");
    if (static_cast<int64_t>(decisions_.size()) <= layer) decisions_.resize(layer + 1);
    auto u = noise_->sample(layer, evict_logits).to(ct);
    if (options_.per_layer) u = u.narrow(1, 0, 1).expand_as(u);
    auto z = (evict_logits.to(ct) + u) / options_.tau;
    auto soft = at::sigmoid(z);
    auto hard = (soft > 0.5).to(ct) - soft.detach() + soft;
    decisions_[layer] = {z, soft, hard};
    // Key j pays log(1 - a_soft[j+1]); the sequence's last key has no decision yet.
    auto keep_log = at::log_sigmoid(-z).view({B_, T_, n_kv});
    auto per_key = at::constant_pad_nd(keep_log.narrow(1, 1, T_ - 1), {0, 0, 0, 1}, 0);  // [B, T(j), n_kv]
    penalty = per_key.permute({0, 2, 1});
  }

  at::Tensor out;  // [B, n_kv, G, T, D]
  if (options_.block > 0 && T_ > options_.block) {
    out = blockwise_training_attention(qg, kg, vg, penalty.defined() ? penalty.contiguous() : penalty, documents_,
                                       options_.window, options_.block);
  } else {
    auto scores = at::matmul(qg, kg.unsqueeze(2).transpose(-1, -2)).mul_(1.0 / std::sqrt(static_cast<double>(D)));
    scores.add_(visibility_bias(ct, q.device()));                                       // [B, n_kv, G, T, T]
    if (penalty.defined())
      scores = scores + at::where(far_, penalty.reshape({B_, n_kv, 1, 1, T_}), at::zeros({}, penalty.options()));
    out = at::matmul(at::softmax(scores, -1), vg.unsqueeze(2));
  }
  return out.permute({0, 3, 1, 2, 4}).reshape({N, n_heads, D}).to(q.scalar_type());
}

}  // namespace dms
