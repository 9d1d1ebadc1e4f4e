// One decoder-only transformer forward for Llama, Qwen2 and Qwen3: RMSNorm, rotary
// attention with grouped KV heads (optional biases and per-head q/k norms), SwiGLU MLP.
#pragma once
#include <ATen/ATen.h>

#include "dms/model/attention.h"
#include "dms/model/config.h"
#include "dms/model/weights.h"

namespace dms {

class Transformer {
 public:
  Transformer(ModelConfig config, Weights weights);

  // tokens, positions: [T] int64. Returns the final hidden states [T, H] (after the last norm).
  at::Tensor forward(const at::Tensor& tokens, const at::Tensor& positions, AttentionBackend& attn) const;
  // Logits in fp32 for hidden rows [N, H] -> [N, V].
  at::Tensor logits(const at::Tensor& hidden) const;

  const ModelConfig& config() const { return config_; }
  const Weights& weights() const { return weights_; }
  at::ScalarType dtype() const { return weights_.embed.scalar_type(); }

 private:
  at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w) const;
  at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const;

  ModelConfig config_;
  Weights weights_;
  at::Tensor inv_freq_;   // [D/2] fp32, with the checkpoint's rope scaling applied
};

// Rotary inverse frequencies for `config` (default, linear or llama3 scaling), divided by
// `freq_factors` when given (GGUF stores Llama 3 scaling that way).
at::Tensor rope_inv_freq(const ModelConfig& config, const at::Tensor& freq_factors);

}  // namespace dms
