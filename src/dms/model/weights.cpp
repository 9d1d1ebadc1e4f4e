#include "dms/model/weights.h"

#include <cstring>
#include <filesystem>
#include <type_traits>

#include "dms/format/gguf.h"
#include "dms/format/safetensors.h"
#include "dms/model/dms_adapter_file.h"
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
  // A matrix [rows, cols]: as stored where the source keeps it so, else get(name, dtype).
  virtual LinearWeight matrix(const std::string& name, at::ScalarType dtype, WeightStorage) const {
    return get(name, dtype);
  }
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
    return unpermuted(name, out);
  }
  // Quantized and 16-bit matrices stay in the file as rows of bytes; the Llama q/k row
  // permutation moves whole rows, so those few are copied in Hugging Face order. Q4_0, Q4_1 and
  // Q8_0 matrices are packed for the SIMD kernels into memory of their own (the same bytes,
  // reordered), and the file's pages they were read from leave the resident set.
  LinearWeight matrix(const std::string& name, at::ScalarType dtype, WeightStorage storage) const override {
    const GgufTensorInfo& t = *info(name);
    if (storage == WeightStorage::Float || t.type == GgmlType::F32 || !cpu::quant_matmul_supports(t.type))
      return get(name, dtype);
    const int64_t rows = t.shape[0], cols = t.shape[1];
    const auto row_bytes = static_cast<int64_t>(ggml_row_bytes(t.type, cols));
    auto bytes = at::from_blob(const_cast<uint8_t*>(t.data), {rows, row_bytes}, at::kByte);
    LinearWeight w = LinearWeight::packed_rows(unpermuted(name, bytes), t.type, cols);
    if (w.packed) g_->release(t);
    return w;
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

  at::Tensor unpermuted(const std::string& name, const at::Tensor& t) const {
    if (c_.arch != Arch::Llama) return t;
    if (name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias")) return unpermute(t, c_.n_heads);
    if (name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias")) return unpermute(t, c_.n_kv_heads);
    return t;
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

Weights load(const TensorSource& src, const ModelConfig& c, at::ScalarType dtype, WeightStorage storage) {
  if (dtype != at::kFloat && dtype != at::kBFloat16) fail(src.where(), "compute dtype must be f32 or bf16");
  auto check = [&](const std::string& name, const std::vector<int64_t>& expect) {
    if (!src.has(name)) fail(src.where(), "missing " + src.label(name));
    auto got = src.shape(name);
    if (got != expect)
      fail(src.file_of(name), src.label(name) + " has shape " + shape_str(got) + ", expected " + shape_str(expect));
  };
  auto get = [&](const std::string& name, std::vector<int64_t> expect) {
    check(name, expect);
    return src.get(name, dtype);
  };
  auto matrix = [&](const std::string& name, std::vector<int64_t> expect) {
    check(name, expect);
    return src.matrix(name, dtype, storage);
  };
  const int64_t H = c.hidden_size, D = c.head_dim, I = c.intermediate_size;
  const int64_t Q = c.n_heads * D, KV = c.n_kv_heads * D;
  Weights w;
  w.embed = matrix("model.embed_tokens.weight", {c.vocab_size, H});
  w.final_norm = get("model.norm.weight", {H});
  w.lm_head = c.tie_word_embeddings ? w.embed : matrix("lm_head.weight", {c.vocab_size, H});
  if (src.has("rope_freqs.weight")) w.rope_freq_factors = get("rope_freqs.weight", {D / 2}).to(at::kFloat);
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    LayerWeights l;
    l.attn_norm = get(p + "input_layernorm.weight", {H});
    l.wq = matrix(p + "self_attn.q_proj.weight", {Q, H});
    l.wk = matrix(p + "self_attn.k_proj.weight", {KV, H});
    l.wv = matrix(p + "self_attn.v_proj.weight", {KV, H});
    l.wo = matrix(p + "self_attn.o_proj.weight", {H, Q});
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
    l.w_gate = matrix(p + "mlp.gate_proj.weight", {I, H});
    l.w_up = matrix(p + "mlp.up_proj.weight", {I, H});
    l.w_down = matrix(p + "mlp.down_proj.weight", {H, I});
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
  static constexpr at::Tensor DecisionHeadWeights::*kMembers[] = {&DecisionHeadWeights::norm, &DecisionHeadWeights::proj,
                                                                  &DecisionHeadWeights::bias};
  std::vector<DecisionHeadTensor> out;
  size_t k = 0;
  for (auto& spec : decision_head_specs(c, layer)) out.push_back({std::move(spec.name), std::move(spec.shape), kMembers[k++]});
  return out;
}

Weights load_hf_weights(const std::string& dir, const ModelConfig& config, at::ScalarType dtype) {
  auto src = std::make_shared<SafetensorsSource>(dir);
  Weights w = load(*src, config, dtype, WeightStorage::Float);
  w.keep_alive.push_back(src);
  return w;
}

Weights load_gguf_weights(std::shared_ptr<const GgufFile> gguf, const ModelConfig& config,
                          at::ScalarType dtype, WeightStorage storage) {
  GgufSource src(gguf, config);
  Weights w = load(src, config, dtype, storage);
  w.keep_alive.push_back(gguf);
  return w;
}

namespace {

at::Tensor& tensor_of(at::Tensor& t) { return t; }
at::Tensor& tensor_of(LinearWeight& w) { return w.tensor; }
const at::Tensor& tensor_of(const at::Tensor& t) { return t; }
const at::Tensor& tensor_of(const LinearWeight& w) { return w.tensor; }

// Sums f(field) over the defined weights of `w`, a tied head once.
template <class F>
int64_t sum_over(const Weights& w, F f) {
  int64_t n = f(w.embed) + f(w.final_norm);
  if (!w.lm_head.is_same(w.embed)) n += f(w.lm_head);
  for (const auto& l : w.layers)
    for_each_layer_weight(l, [&](const char*, const auto& t) {
      if (t.defined()) n += f(t);
    });
  return n;
}

}  // namespace

bool Weights::has_quantized() const {
  return sum_over(*this, [](const auto& t) -> int64_t {
           if constexpr (std::is_same_v<std::decay_t<decltype(t)>, LinearWeight>) return t.quantized();
           return 0;
         }) > 0;
}

int64_t parameter_count(const Weights& w) {
  return sum_over(w, [](const auto& t) -> int64_t { return t.numel(); });
}

int64_t weight_bytes(const Weights& w) {
  return sum_over(w, [](const auto& t) -> int64_t { return static_cast<int64_t>(tensor_of(t).nbytes()); });
}

std::vector<NamedWeight> named_weights(Weights& w) {
  std::vector<NamedWeight> out;
  auto add = [&](std::string name, at::Tensor& t) {
    if (t.defined()) out.push_back({std::move(name), &t});
  };
  add("model.embed_tokens.weight", w.embed.tensor);
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    for_each_layer_weight(w.layers[i], [&](const char* name, auto& t) { add(p + name, tensor_of(t)); });
  }
  add("model.norm.weight", w.final_norm);
  if (!w.lm_head.is_same(w.embed)) add("lm_head.weight", w.lm_head.tensor);
  return out;
}

Weights weights_on(const Weights& w, const at::Device& device) {
  if (w.has_quantized() && !device.is_cpu())
    fail(device.str(), "quantized weights run on the CPU only; load them as float (WeightStorage::Float)");
  Weights out = w;
  for (const auto& n : named_weights(out)) *n.tensor = n.tensor->to(device);
  if (w.lm_head.is_same(w.embed)) out.lm_head = out.embed;  // named_weights leaves a tied head out
  if (w.rope_freq_factors.defined()) out.rope_freq_factors = w.rope_freq_factors.to(device);
  return out;
}

}  // namespace dms
