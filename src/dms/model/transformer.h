// One decoder-only transformer forward for Llama, Qwen2 and Qwen3: RMSNorm, rotary
// attention with grouped KV heads (optional biases and per-head q/k norms), SwiGLU MLP, and
// the DMS decision heads (Mode A or B) whose logits go to the attention backend with q, k, v.
// Built from differentiable at:: ops only, so training can run the same forward.
#pragma once
#include <ATen/ATen.h>

#include "dms/model/attention.h"
#include "dms/model/config.h"
#include "dms/model/weights.h"

namespace dms {

class Transformer {
 public:
  // Throws Error when config.dms.mode is Adapter and a layer has no decision head.
  Transformer(ModelConfig config, Weights weights);

  // tokens, positions: [T] int64. Returns the final hidden states [T, H] (after the last norm).
  at::Tensor forward(const at::Tensor& tokens, const at::Tensor& positions, AttentionBackend& attn) const;
  // Logits in fp32 (fp64 for fp64 weights) for hidden rows [N, H] -> [N, V]. With `kept`, fp32
  // logits of a stored lm_head go into it where kept_or_empty (util/kept_tensor.h) allows.
  at::Tensor logits(const at::Tensor& hidden, at::Tensor* kept = nullptr) const;

  const ModelConfig& config() const { return config_; }
  const Weights& weights() const { return weights_; }
  at::ScalarType dtype() const { return weights_.dtype(); }

 private:
  struct Buffers;
  // `out` (may be undefined): where a plain fp32 result goes (see Buffers); may be x itself.
  at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& out = {}) const;
  at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                    const at::Tensor& out = {}) const;
  at::Tensor decision_logits(const at::Tensor& raw) const;
  at::Tensor adapter_logits(const at::Tensor& x, const LayerWeights& l, const Buffers& b) const;

  ModelConfig config_;
  Weights weights_;
  at::Tensor inv_freq_;   // [D/2] in the compute type, with the checkpoint's rope scaling applied
  at::Tensor query_keep_; // [n_heads, D] ones, 0 at the channels Mode A borrows (head g*G, D-1)
  bool differentiable_ = false;  // some weight requires grad: the forward may build a graph
};

// Rotary inverse frequencies for `config` (default, linear or llama3 scaling), divided by
// `freq_factors` when given (GGUF stores Llama 3 scaling that way).
at::Tensor rope_inv_freq(const ModelConfig& config, const at::Tensor& freq_factors);

}  // namespace dms
