#include "dms/model/weights.h"

#include <cstring>
#include <filesystem>

#include "dms/format/gguf.h"
#include "dms/format/safetensors.h"
#include "dms/util/error.h"

namespace dms {
namespace {

std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// A view of bytes in a mapped file as a tensor; copied when misaligned for its element type,
// and converted (copied) when the stored dtype is not the compute dtype.
at::Tensor wrap(const uint8_t* data, at::IntArrayRef shape, at::ScalarType stored, at::ScalarType dtype) {
  auto t = at::from_blob(const_cast<uint8_t*>(data), shape, at::TensorOptions().dtype(stored));
  if (reinterpret_cast<uintptr_t>(data) % at::elementSize(stored) != 0) t = t.clone();
  return t.to(dtype);
}

// Where the loader gets tensors from, by their Hugging Face names.
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  // The file that lists the tensors (named when one is missing).
  virtual const std::string& where() const = 0;
  // The file that holds tensor `name` (named when its shape or type is wrong).
  virtual const std::string& file_of(const std::string& name) const = 0;
  // How errors name tensor `name`: as the file spells it.
  virtual std::string label(const std::string& name) const { return "tensor '" + name + "'"; }
  virtual bool has(const std::string& name) const = 0;
  virtual std::vector<int64_t> shape(const std::string& name) const = 0;
  virtual at::Tensor get(const std::string& name, at::ScalarType dtype) const = 0;
};

class SafetensorsSource : public TensorSource {
 public:
  explicit SafetensorsSource(const std::string& dir)
      : listing_(listing_file(dir)), ckpt_(SafetensorsCheckpoint::open_dir(dir)) {}
  const std::string& where() const override { return listing_; }
  const std::string& file_of(const std::string& name) const override { return ckpt_.find(name)->file; }
  bool has(const std::string& name) const override { return ckpt_.find(name) != nullptr; }
  std::vector<int64_t> shape(const std::string& name) const override { return ckpt_.find(name)->shape; }
  at::Tensor get(const std::string& name, at::ScalarType dtype) const override {
    const StTensor& t = *ckpt_.find(name);
    at::ScalarType stored;
    switch (t.dtype) {
      case StDtype::F32: stored = at::kFloat; break;
      case StDtype::F16: stored = at::kHalf; break;
      case StDtype::BF16: stored = at::kBFloat16; break;
      case StDtype::F64: stored = at::kDouble; break;
      default: fail(t.file, "tensor '" + name + "' has dtype " + st_dtype_name(t.dtype) + ", expected a float type");
    }
    return wrap(t.data, t.shape, stored, dtype);
  }

 private:
  // model.safetensors when present (it wins, as in SafetensorsCheckpoint::open_dir), else the shard index.
  static std::string listing_file(const std::string& dir) {
    const auto single = std::filesystem::path(dir) / "model.safetensors";
    return (std::filesystem::exists(single) ? single : std::filesystem::path(dir) / "model.safetensors.index.json")
        .string();
  }

  std::string listing_;
  SafetensorsCheckpoint ckpt_;
};

// GGUF names tensors differently (blk.N.attn_q.weight) and, for Llama, stores q/k
// projections with rows permuted for interleaved rotary pairs; both are undone here.
class GgufSource : public TensorSource {
 public:
  GgufSource(std::shared_ptr<const GgufFile> g, const ModelConfig& c) : g_(std::move(g)), c_(c) {}
  const std::string& where() const override { return g_->path(); }
  const std::string& file_of(const std::string&) const override { return g_->path(); }
  std::string label(const std::string& name) const override {
    return "tensor '" + gguf_name(name) + "' (" + name + ")";
  }
  bool has(const std::string& name) const override { return info(name) != nullptr; }
  std::vector<int64_t> shape(const std::string& name) const override { return info(name)->shape; }
  at::Tensor get(const std::string& name, at::ScalarType dtype) const override {
    const GgufTensorInfo& t = *info(name);
    at::Tensor out;
    switch (t.type) {
      case GgmlType::F32: out = wrap(t.data, t.shape, at::kFloat, dtype); break;
      case GgmlType::F16: out = wrap(t.data, t.shape, at::kHalf, dtype); break;
      case GgmlType::BF16: out = wrap(t.data, t.shape, at::kBFloat16, dtype); break;
      default: {
        at::Tensor f = at::empty(t.shape, at::kFloat);
        g_->dequantize(t, f.data_ptr<float>());
        out = f.to(dtype);
      }
    }
    if (c_.arch == Arch::Llama) {
      if (name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias")) out = unpermute(out, c_.n_heads);
      if (name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias")) out = unpermute(out, c_.n_kv_heads);
    }
    return out;
  }

 private:
  // llama.cpp stores each head's rows as (D/2, 2) interleaved pairs: row 2i+j of the head is
  // Hugging Face row j*D/2 + i. Viewing a head as [D/2, 2] and transposing gives [2, D/2].
  static at::Tensor unpermute(const at::Tensor& w, int64_t heads) {
    auto shape = w.sizes().vec();
    std::vector<int64_t> split = {heads, shape[0] / heads / 2, 2};
    split.insert(split.end(), shape.begin() + 1, shape.end());
    return w.reshape(split).transpose(1, 2).reshape(shape).contiguous();
  }

  const GgufTensorInfo* info(const std::string& name) const { return g_->find_tensor(gguf_name(name)); }

  static std::string gguf_name(const std::string& hf) {
    static const std::pair<const char*, const char*> top[] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
        {"rope_freqs.weight", "rope_freqs.weight"},
    };
    for (auto [a, b] : top)
      if (hf == a) return b;
    static const std::pair<const char*, const char*> layer[] = {
        {"input_layernorm.", "attn_norm."},     {"self_attn.q_proj.", "attn_q."},
        {"self_attn.k_proj.", "attn_k."},       {"self_attn.v_proj.", "attn_v."},
        {"self_attn.o_proj.", "attn_output."},  {"self_attn.q_norm.", "attn_q_norm."},
        {"self_attn.k_norm.", "attn_k_norm."},  {"post_attention_layernorm.", "ffn_norm."},
        {"mlp.gate_proj.", "ffn_gate."},        {"mlp.up_proj.", "ffn_up."},
        {"mlp.down_proj.", "ffn_down."},
    };
    const std::string prefix = "model.layers.";
    if (!hf.starts_with(prefix)) return hf;
    size_t dot = hf.find('.', prefix.size());
    std::string idx = hf.substr(prefix.size(), dot - prefix.size());
    std::string rest = hf.substr(dot + 1);
    for (auto [a, b] : layer)
      if (rest.starts_with(a)) return "blk." + idx + "." + b + rest.substr(std::strlen(a));
    return hf;
  }

  std::shared_ptr<const GgufFile> g_;
  const ModelConfig& c_;
};

Weights load(const TensorSource& src, const ModelConfig& c, at::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kBFloat16) fail(src.where(), "compute dtype must be f32 or bf16");
  auto get = [&](const std::string& name, std::vector<int64_t> expect) {
    if (!src.has(name)) fail(src.where(), "missing " + src.label(name));
    auto got = src.shape(name);
    if (got != expect)
      fail(src.file_of(name), src.label(name) + " has shape " + shape_str(got) + ", expected " + shape_str(expect));
    return src.get(name, dtype);
  };
  const int64_t H = c.hidden_size, D = c.head_dim, I = c.intermediate_size;
  const int64_t Q = c.n_heads * D, KV = c.n_kv_heads * D;
  Weights w;
  w.embed = get("model.embed_tokens.weight", {c.vocab_size, H});
  w.final_norm = get("model.norm.weight", {H});
  w.lm_head = c.tie_word_embeddings ? w.embed : get("lm_head.weight", {c.vocab_size, H});
  if (src.has("rope_freqs.weight")) w.rope_freq_factors = get("rope_freqs.weight", {D / 2}).to(at::kFloat);
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    LayerWeights l;
    l.attn_norm = get(p + "input_layernorm.weight", {H});
    l.wq = get(p + "self_attn.q_proj.weight", {Q, H});
    l.wk = get(p + "self_attn.k_proj.weight", {KV, H});
    l.wv = get(p + "self_attn.v_proj.weight", {KV, H});
    l.wo = get(p + "self_attn.o_proj.weight", {H, Q});
    if (c.qkv_bias) {
      l.bq = get(p + "self_attn.q_proj.bias", {Q});
      l.bk = get(p + "self_attn.k_proj.bias", {KV});
      l.bv = get(p + "self_attn.v_proj.bias", {KV});
    }
    if (c.o_bias) l.bo = get(p + "self_attn.o_proj.bias", {H});
    if (c.qk_norm) {
      l.q_norm = get(p + "self_attn.q_norm.weight", {D});
      l.k_norm = get(p + "self_attn.k_norm.weight", {D});
    }
    l.mlp_norm = get(p + "post_attention_layernorm.weight", {H});
    l.w_gate = get(p + "mlp.gate_proj.weight", {I, H});
    l.w_up = get(p + "mlp.up_proj.weight", {I, H});
    l.w_down = get(p + "mlp.down_proj.weight", {H, I});
    if (c.mlp_bias) {
      l.b_gate = get(p + "mlp.gate_proj.bias", {I});
      l.b_up = get(p + "mlp.up_proj.bias", {I});
      l.b_down = get(p + "mlp.down_proj.bias", {H});
    }
    if (c.dms.mode == DmsMode::Adapter)
      for (const auto& t : decision_head_tensors(c, i)) l.decision.*t.member = get(t.name, t.shape);
    w.layers.push_back(std::move(l));
  }
  return w;
}

}  // namespace

std::vector<DecisionHeadTensor> decision_head_tensors(const ModelConfig& c, int64_t layer) {
  const std::string p = "model.layers." + std::to_string(layer) + ".self_attn.dms_proj_alpha";
  std::vector<DecisionHeadTensor> out = {
      {p + "_norm.weight", {c.hidden_size}, &DecisionHeadWeights::norm},
      {p + ".weight", {c.n_kv_heads, c.hidden_size}, &DecisionHeadWeights::proj},
  };
  // As the reference builds it: nn.Linear(hidden, n_kv, bias=attention_bias).
  if (c.qkv_bias) out.push_back({p + ".bias", {c.n_kv_heads}, &DecisionHeadWeights::bias});
  return out;
}

Weights load_hf_weights(const std::string& dir, const ModelConfig& config, at::ScalarType dtype) {
  auto src = std::make_shared<SafetensorsSource>(dir);
  Weights w = load(*src, config, dtype);
  w.keep_alive.push_back(src);
  return w;
}

Weights load_gguf_weights(std::shared_ptr<const GgufFile> gguf, const ModelConfig& config,
                          at::ScalarType dtype) {
  GgufSource src(gguf, config);
  Weights w = load(src, config, dtype);
  w.keep_alive.push_back(gguf);
  return w;
}

int64_t parameter_count(const Weights& w) {
  int64_t n = w.embed.numel() + w.final_norm.numel();
  if (!w.lm_head.is_same(w.embed)) n += w.lm_head.numel();
  for (const auto& l : w.layers)
    for (const at::Tensor* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq, &l.bk, &l.bv, &l.bo,
                                &l.q_norm, &l.k_norm, &l.mlp_norm, &l.w_gate, &l.w_up, &l.w_down,
                                &l.b_gate, &l.b_up, &l.b_down, &l.decision.norm, &l.decision.proj,
                                &l.decision.bias})
      if (t->defined()) n += t->numel();
  return n;
}

std::vector<NamedWeight> named_weights(Weights& w) {
  std::vector<NamedWeight> out;
  auto add = [&](std::string name, at::Tensor& t) {
    if (t.defined()) out.push_back({std::move(name), &t});
  };
  add("model.embed_tokens.weight", w.embed);
  for (size_t i = 0; i < w.layers.size(); ++i) {
    LayerWeights& l = w.layers[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add(p + "input_layernorm.weight", l.attn_norm);
    add(p + "self_attn.q_proj.weight", l.wq);
    add(p + "self_attn.q_proj.bias", l.bq);
    add(p + "self_attn.k_proj.weight", l.wk);
    add(p + "self_attn.k_proj.bias", l.bk);
    add(p + "self_attn.v_proj.weight", l.wv);
    add(p + "self_attn.v_proj.bias", l.bv);
    add(p + "self_attn.o_proj.weight", l.wo);
    add(p + "self_attn.o_proj.bias", l.bo);
    add(p + "self_attn.q_norm.weight", l.q_norm);
    add(p + "self_attn.k_norm.weight", l.k_norm);
    add(p + "self_attn.dms_proj_alpha_norm.weight", l.decision.norm);
    add(p + "self_attn.dms_proj_alpha.weight", l.decision.proj);
    add(p + "self_attn.dms_proj_alpha.bias", l.decision.bias);
    add(p + "post_attention_layernorm.weight", l.mlp_norm);
    add(p + "mlp.gate_proj.weight", l.w_gate);
    add(p + "mlp.gate_proj.bias", l.b_gate);
    add(p + "mlp.up_proj.weight", l.w_up);
    add(p + "mlp.up_proj.bias", l.b_up);
    add(p + "mlp.down_proj.weight", l.w_down);
    add(p + "mlp.down_proj.bias", l.b_down);
  }
  add("model.norm.weight", w.final_norm);
  if (!w.lm_head.is_same(w.embed)) add("lm_head.weight", w.lm_head);
  return out;
}

Weights weights_on(const Weights& w, const at::Device& device) {
  Weights out = w;
  for (const auto& n : named_weights(out)) *n.tensor = n.tensor->to(device);
  if (w.lm_head.is_same(w.embed)) out.lm_head = out.embed;  // named_weights leaves a tied head out
  if (w.rope_freq_factors.defined()) out.rope_freq_factors = w.rope_freq_factors.to(device);
  return out;
}

}  // namespace dms
