#include "dms/model/transformer.h"

#include <ATen/core/grad_mode.h>

#include <cmath>
#include <initializer_list>

#include "dms/kernels/cpu/swiglu.h"
#include "dms/kernels/cpu/vector_math.h"
#include "dms/util/error.h"
#include "dms/util/kept_tensor.h"

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
  if (freq_factors.defined()) return inv.to(freq_factors.device()) / freq_factors.to(at::kDouble);
  return inv;
}

namespace {

// Norms, RoPE and decision logits compute in fp32, or in fp64 for fp64 weights (the gradient
// checks), never in bf16.
at::ScalarType compute_type(const at::Tensor& x) { return at::promote_types(x.scalar_type(), at::kFloat); }

// Inference in fp32 on the CPU, no gradient wanted: the norms and RoPE run as one loop per row
// and the MLP activation and residual updates in place, instead of chains of ATen ops that each cost a
// dispatch and an allocation (a decode step of a 30-layer model ran about 1,500 of them). The
// same arithmetic in fp32, rows independent of each other.
bool plain_fp32(std::initializer_list<const at::Tensor*> tensors) {
  const bool grad = at::GradMode::is_enabled();
  for (const at::Tensor* t : tensors)
    if (!t->defined() || !t->device().is_cpu() || t->scalar_type() != at::kFloat || !t->is_contiguous() ||
        (grad && t->requires_grad()))
      return false;
  return true;
}

// x += y, both plain fp32 of one size: a loop instead of an ATen op (TensorIterator set-up costs
// more than the 576 additions of a decode step).
void add_in_place(at::Tensor& x, const at::Tensor& y) {
  if (!plain_fp32({&y}) || y.numel() != x.numel()) {
    x.add_(y);
    return;
  }
  float* px = x.data_ptr<float>();
  const float* py = y.const_data_ptr<float>();
  for (int64_t i = 0, n = x.numel(); i < n; ++i) px[i] += py[i];
}

// `into` can take a plain fp32 result shaped like x.
bool fits(const at::Tensor& into, const at::Tensor& x) {
  return into.defined() && plain_fp32({&into}) && into.sizes() == x.sizes();
}

}  // namespace

// The activations of a plain fp32 forward (inference on the CPU, no gradient): one buffer each,
// shared by all the layers, so that a decode step allocates them once instead of in every layer.
// Undefined otherwise: every op then makes its own result.
struct Transformer::Buffers {
  at::Tensor h, decision_h, evict_logits, q, k, v, q_heads, k_heads, v_heads, q_rot, k_rot, delta, gate, up;

  Buffers(const ModelConfig& c, int64_t T, bool plain) {
    if (!plain) return;
    const int64_t D = c.head_dim;
    const auto make = [](std::initializer_list<int64_t> shape) { return at::empty(shape, at::kFloat); };
    h = make({T, c.hidden_size});
    delta = make({T, c.hidden_size});
    if (c.dms.mode == DmsMode::Adapter) decision_h = make({T, c.hidden_size}), evict_logits = make({T, c.n_kv_heads});
    q = make({T, c.n_heads * D}), k = make({T, c.n_kv_heads * D}), v = make({T, c.n_kv_heads * D});
    q_heads = q.view({T, c.n_heads, D}), k_heads = k.view({T, c.n_kv_heads, D}), v_heads = v.view({T, c.n_kv_heads, D});
    q_rot = make({T, c.n_heads, D}), k_rot = make({T, c.n_kv_heads, D});
    gate = make({T, c.intermediate_size}), up = make({T, c.intermediate_size});
  }
};

Transformer::Transformer(ModelConfig config, Weights weights)
    : config_(std::move(config)), weights_(std::move(weights)) {
  const auto on = weights_.final_norm.options();  // the weights' device and compute dtype
  inv_freq_ = rope_inv_freq(config_, weights_.rope_freq_factors).to(on.dtype(compute_type(weights_.final_norm)));
  const auto& c = config_;
  if (c.dms.mode == DmsMode::Adapter)
    for (size_t i = 0; i < weights_.layers.size(); ++i)
      if (!weights_.layers[i].decision.proj.defined() || !weights_.layers[i].decision.norm.defined())
        fail("model", "DMS mode 'adapter' needs the dms_proj_alpha tensors of every layer; layer " +
                          std::to_string(i) + " has none");
  for (const NamedWeight& w : named_weights(weights_))
    differentiable_ = differentiable_ || (w.tensor->defined() && w.tensor->requires_grad());
  query_keep_ = at::ones({c.n_heads, c.head_dim}, on);
  query_keep_.slice(0, 0, c.n_heads, c.group_size()).select(1, c.head_dim - 1).zero_();
}

at::Tensor Transformer::rms_norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& into) const {
  if (plain_fp32({&x, &w}) && w.numel() == x.size(-1)) {
    auto out = fits(into, x) ? into : at::empty_like(x);  // each row is read whole before it is written
    const int64_t cols = x.size(-1), rows = cols ? x.numel() / cols : 0;
    const float *px = x.const_data_ptr<float>(), *pw = w.const_data_ptr<float>();
    float* po = out.data_ptr<float>();
    for (int64_t r = 0; r < rows; ++r, px += cols, po += cols) {
      const float inv = 1.0f / std::sqrt(cpu::dot(px, px, cols) / static_cast<float>(cols) + static_cast<float>(config_.rms_eps));
      for (int64_t j = 0; j < cols; ++j) po[j] = pw[j] * (px[j] * inv);
    }
    return out;
  }
  auto xf = x.to(compute_type(x));
  auto normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + config_.rms_eps);
  return w * normed.to(x.scalar_type());
}

// scale * raw - offset in fp32 (fp64 for fp64 weights), [T, n_kv]; per-layer decisions all
// follow KV head 0.
at::Tensor Transformer::decision_logits(const at::Tensor& raw) const {
  auto l = raw.to(compute_type(raw)) * config_.dms.alpha_scale - config_.dms.alpha_offset;
  return config_.dms.per_layer ? l.narrow(1, 0, 1).expand_as(l).contiguous() : l;
}

// The decision logits of Mode B's adapter for the rows x [T, H] entering layer l: the linear head
// on the normed rows. Plain fp32 inference takes a loop per row and KV head.
at::Tensor Transformer::adapter_logits(const at::Tensor& x, const LayerWeights& l, const Buffers& b) const {
  const auto& d = l.decision;
  const bool plain = b.decision_h.defined() && plain_fp32({&x, &d.proj}) && (!d.bias.defined() || plain_fp32({&d.bias}));
  if (!plain) return decision_logits(at::linear(rms_norm(x, d.norm), d.proj, d.bias));
  const auto normed = rms_norm(x, d.norm, b.decision_h);
  const int64_t T = x.size(0), H = x.size(1), n_kv = config_.n_kv_heads;
  const at::Tensor& logits = b.evict_logits;
  const float *pn = normed.const_data_ptr<float>(), *pw = d.proj.const_data_ptr<float>();
  const float* pb = d.bias.defined() ? d.bias.const_data_ptr<float>() : nullptr;
  const auto scale = static_cast<float>(config_.dms.alpha_scale), offset = static_cast<float>(config_.dms.alpha_offset);
  float* out = logits.data_ptr<float>();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t g = 0; g < n_kv; ++g) {
      const int64_t head = config_.dms.per_layer ? 0 : g;  // per-layer decisions all follow KV head 0
      const float raw = cpu::dot(pn + t * H, pw + head * H, H) + (pb ? pb[head] : 0.0f);
      out[t * n_kv + g] = raw * scale - offset;
    }
  return logits;
}

// Rotate-half RoPE on [T, heads, D]; cos/sin are [T, 1, D] in the compute type.
at::Tensor Transformer::rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                               const at::Tensor& into) const {
  const int64_t half = config_.head_dim / 2;
  if (plain_fp32({&x, &cos, &sin}) && x.dim() == 3 && cos.size(0) == x.size(0)) {
    auto out = fits(into, x) && !into.is_same(x) ? into : at::empty_like(x);
    const int64_t T = x.size(0), heads = x.size(1), D = x.size(2);
    const float *px = x.const_data_ptr<float>(), *pc = cos.const_data_ptr<float>(), *ps = sin.const_data_ptr<float>();
    float* po = out.data_ptr<float>();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        const float *xr = px + (t * heads + h) * D, *c = pc + t * D, *s = ps + t * D;
        float* o = po + (t * heads + h) * D;
        for (int64_t i = 0; i < half; ++i) o[i] = xr[i] * c[i] - xr[i + half] * s[i];
        for (int64_t i = half; i < D; ++i) o[i] = xr[i] * c[i] + xr[i - half] * s[i];
      }
    return out;
  }
  auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  auto rotated = at::cat({-x2, x1}, -1);
  const auto ct = compute_type(x);
  return (x.to(ct) * cos + rotated.to(ct) * sin).to(x.scalar_type());
}

at::Tensor Transformer::forward(const at::Tensor& tokens, const at::Tensor& positions, AttentionBackend& attn) const {
  const auto& c = config_;
  const int64_t T = tokens.size(0), D = c.head_dim;
  auto freqs = positions.to(inv_freq_.scalar_type()).unsqueeze(1) * inv_freq_.unsqueeze(0);  // [T, D/2]
  auto emb = at::cat({freqs, freqs}, -1).unsqueeze(1);                          // [T, 1, D]
  auto cos = emb.cos(), sin = emb.sin();

  auto x = embedding(weights_.embed, tokens, weights_.dtype());  // [T, H]
  // x is this forward's own tensor, and with no weight that requires grad nothing saved it for a backward.
  const bool in_place = !(differentiable_ && at::GradMode::is_enabled()) && plain_fp32({&x});
  const Buffers b(c, T, in_place);
  // A result in buffer `buf` comes back as the buffer itself: its view by heads is kept too.
  const auto heads = [&](const at::Tensor& y, const at::Tensor& buf, const at::Tensor& buf_heads) {
    return buf.defined() && y.is_same(buf) ? buf_heads : y.view({T, -1, D});
  };
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const LayerWeights& l = weights_.layers[i];
    auto h = rms_norm(x, l.attn_norm, b.h);
    const auto qkv = linear_many(h, {&l.wq, &l.wk, &l.wv}, {&l.bq, &l.bk, &l.bv}, {b.q, b.k, b.v});
    auto q = heads(qkv[0], b.q, b.q_heads);
    auto k = heads(qkv[1], b.k, b.k_heads);
    auto v = heads(qkv[2], b.v, b.v_heads);
    if (c.qk_norm) {  // in place where q and k are the buffers
      q = rms_norm(q, l.q_norm, q.is_same(b.q_heads) ? q : at::Tensor());
      k = rms_norm(k, l.k_norm, k.is_same(b.k_heads) ? k : at::Tensor());
    }
    at::Tensor evict_logits;  // [T, n_kv] fp32: l[t, g] of dms-spec section 1
    if (c.dms.mode == DmsMode::QueryChannel) {
      // Mode A borrows the last channel of each KV group's first query head, which then takes
      // no part in attention: zeroed before RoPE and again after it.
      evict_logits = decision_logits(q.select(2, D - 1).slice(1, 0, c.n_heads, c.group_size()));
      q = rotate(q * query_keep_, cos, sin) * query_keep_;
    } else {
      // Mode B reads the residual stream as it enters the layer.
      if (c.dms.mode == DmsMode::Adapter) evict_logits = adapter_logits(x, l, b);
      q = rotate(q, cos, sin, b.q_rot);
    }
    k = rotate(k, cos, sin, b.k_rot);
    auto o = attn.attend(i, q, k, v, c.dms.decides() ? evict_logits : at::Tensor()).reshape({T, c.n_heads * D});
    if (in_place) add_in_place(x, linear(o, l.wo, l.bo, b.delta));
    else x = x + linear(o, l.wo, l.bo);

    h = rms_norm(x, l.mlp_norm, b.h);
    const auto gate_up = linear_many(h, {&l.w_gate, &l.w_up}, {&l.b_gate, &l.b_up}, {b.gate, b.up});
    auto gate = gate_up[0], up = gate_up[1];
    at::Tensor act;
    if (plain_fp32({&gate, &up}) && gate.sizes() == up.sizes()) {
      cpu::swiglu_in_place(gate, up);
      act = gate;
    } else {
      act = at::silu(gate) * up;
    }
    if (in_place) add_in_place(x, linear(act, l.w_down, l.b_down, b.delta));
    else x = x + linear(act, l.w_down, l.b_down);
  }
  return rms_norm(x, weights_.final_norm);
}

at::Tensor Transformer::logits(const at::Tensor& hidden, at::Tensor* kept) const {
  const auto& w = weights_.lm_head;
  at::Tensor into;
  if (kept && w.quantized() && plain_fp32({&hidden}) && hidden.dim() == 2)
    into = kept_or_empty(*kept, {hidden.size(0), w.rows()}, at::kFloat);
  return linear(hidden, w, {}, into).to(compute_type(hidden));
}

}  // namespace dms
