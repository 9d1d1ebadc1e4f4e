#include "dms/model/transformer.h"

#include <cmath>

namespace dms {

at::Tensor rope_inv_freq(const ModelConfig& c, const at::Tensor& freq_factors) {
  const int64_t half = c.head_dim / 2;
  auto inv = at::empty({half}, at::kDouble);
  auto* p = inv.data_ptr<double>();
  for (int64_t i = 0; i < half; ++i) p[i] = 1.0 / std::pow(c.rope.theta, 2.0 * i / c.head_dim);
  if (c.rope.type == "linear") {
    inv /= c.rope.factor;
  } else if (c.rope.type == "llama3") {
    // Long wavelengths are slowed by `factor`, short ones kept, and the band between
    // interpolated smoothly (Llama 3.1).
    const double low_wavelen = c.rope.original_max_position / c.rope.low_freq_factor;
    const double high_wavelen = c.rope.original_max_position / c.rope.high_freq_factor;
    for (int64_t i = 0; i < half; ++i) {
      const double wavelen = 2 * M_PI / p[i];
      if (wavelen > low_wavelen) {
        p[i] /= c.rope.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (c.rope.original_max_position / wavelen - c.rope.low_freq_factor) /
                              (c.rope.high_freq_factor - c.rope.low_freq_factor);
        p[i] = (1 - smooth) * p[i] / c.rope.factor + smooth * p[i];
      }
    }
  }
  if (freq_factors.defined()) inv /= freq_factors.to(at::kDouble);
  return inv.to(at::kFloat);
}

Transformer::Transformer(ModelConfig config, Weights weights)
    : config_(std::move(config)), weights_(std::move(weights)) {
  inv_freq_ = rope_inv_freq(config_, weights_.rope_freq_factors);
}

at::Tensor Transformer::rms_norm(const at::Tensor& x, const at::Tensor& w) const {
  auto xf = x.to(at::kFloat);
  auto normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + config_.rms_eps);
  return w * normed.to(x.scalar_type());
}

// Rotate-half RoPE on [T, heads, D]; cos/sin are [T, 1, D].
at::Tensor Transformer::rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const {
  const int64_t half = config_.head_dim / 2;
  auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  auto rotated = at::cat({-x2, x1}, -1);
  return (x.to(at::kFloat) * cos + rotated.to(at::kFloat) * sin).to(x.scalar_type());
}

at::Tensor Transformer::forward(const at::Tensor& tokens, const at::Tensor& positions, AttentionBackend& attn) const {
  const auto& c = config_;
  const int64_t T = tokens.size(0), D = c.head_dim;
  auto freqs = positions.to(at::kFloat).unsqueeze(1) * inv_freq_.unsqueeze(0);  // [T, D/2]
  auto emb = at::cat({freqs, freqs}, -1).unsqueeze(1);                          // [T, 1, D]
  auto cos = emb.cos(), sin = emb.sin();

  auto x = at::embedding(weights_.embed, tokens);  // [T, H]
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const LayerWeights& l = weights_.layers[i];
    auto h = rms_norm(x, l.attn_norm);
    auto q = at::linear(h, l.wq, l.bq).view({T, c.n_heads, D});
    auto k = at::linear(h, l.wk, l.bk).view({T, c.n_kv_heads, D});
    auto v = at::linear(h, l.wv, l.bv).view({T, c.n_kv_heads, D});
    if (c.qk_norm) {
      q = rms_norm(q, l.q_norm);
      k = rms_norm(k, l.k_norm);
    }
    q = rotate(q, cos, sin);
    k = rotate(k, cos, sin);
    auto o = attn.attend(i, q, k, v, at::Tensor()).reshape({T, c.n_heads * D});
    x = x + at::linear(o, l.wo, l.bo);

    h = rms_norm(x, l.mlp_norm);
    auto gate = at::linear(h, l.w_gate, l.b_gate);
    auto up = at::linear(h, l.w_up, l.b_up);
    x = x + at::linear(at::silu(gate) * up, l.w_down, l.b_down);
  }
  return rms_norm(x, weights_.final_norm);
}

at::Tensor Transformer::logits(const at::Tensor& hidden) const {
  return at::linear(hidden, weights_.lm_head).to(at::kFloat);
}

}  // namespace dms
