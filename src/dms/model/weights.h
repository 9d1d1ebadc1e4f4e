// The transformer's tensors, loaded from a Hugging Face directory or GGUF. Float tensors are in
// the compute dtype; those stored in it point straight into the mapped file, as do the matrices a
// GGUF file stores quantized or in 16 bits when they are loaded as stored (WeightStorage).
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "dms/model/config.h"
#include "dms/model/linear.h"

namespace dms {

class GgufFile;

// A layer's Mode B decision head (dms-spec section 1); undefined tensors without one.
struct DecisionHeadWeights {
  at::Tensor norm;                         // [H]        dms_proj_alpha_norm.weight
  at::Tensor proj;                         // [n_kv, H]  dms_proj_alpha.weight
  at::Tensor bias;                         // [n_kv]     dms_proj_alpha.bias, when the attention has biases
};

struct LayerWeights {
  at::Tensor attn_norm;                    // [H]
  LinearWeight wq, wk, wv, wo;             // [nq*D, H], [nkv*D, H], [nkv*D, H], [H, nq*D]
  at::Tensor bq, bk, bv, bo;               // biases, undefined when the model has none
  at::Tensor q_norm, k_norm;               // [D], Qwen3 only
  at::Tensor mlp_norm;                     // [H]
  LinearWeight w_gate, w_up, w_down;       // [I, H], [I, H], [H, I]
  at::Tensor b_gate, b_up, b_down;         // undefined unless mlp_bias
  DecisionHeadWeights decision;            // DmsMode::Adapter only
};

// Calls f(name, field) for every weight of a layer, with its Hugging Face name after
// "model.layers.N.", in checkpoint order; field is an at::Tensor or a LinearWeight (undefined
// where the model has none). The one list of a layer's weights.
template <class Layer, class F>  // Layer: LayerWeights or const LayerWeights
void for_each_layer_weight(Layer& l, F&& f) {
  f("input_layernorm.weight", l.attn_norm);
  f("self_attn.q_proj.weight", l.wq);
  f("self_attn.q_proj.bias", l.bq);
  f("self_attn.k_proj.weight", l.wk);
  f("self_attn.k_proj.bias", l.bk);
  f("self_attn.v_proj.weight", l.wv);
  f("self_attn.v_proj.bias", l.bv);
  f("self_attn.o_proj.weight", l.wo);
  f("self_attn.o_proj.bias", l.bo);
  f("self_attn.q_norm.weight", l.q_norm);
  f("self_attn.k_norm.weight", l.k_norm);
  f("self_attn.dms_proj_alpha_norm.weight", l.decision.norm);
  f("self_attn.dms_proj_alpha.weight", l.decision.proj);
  f("self_attn.dms_proj_alpha.bias", l.decision.bias);
  f("post_attention_layernorm.weight", l.mlp_norm);
  f("mlp.gate_proj.weight", l.w_gate);
  f("mlp.gate_proj.bias", l.b_gate);
  f("mlp.up_proj.weight", l.w_up);
  f("mlp.up_proj.bias", l.b_up);
  f("mlp.down_proj.weight", l.w_down);
  f("mlp.down_proj.bias", l.b_down);
}

struct Weights {
  LinearWeight embed;                      // [V, H]
  at::Tensor final_norm;                   // [H]
  LinearWeight lm_head;                    // [V, H]; aliases embed when tied
  at::Tensor rope_freq_factors;            // [D/2] divisors of the rope frequencies (GGUF Llama 3)
  std::vector<LayerWeights> layers;
  std::vector<std::shared_ptr<const void>> keep_alive;  // mapped files the tensors point into

  // The compute dtype: that of the float tensors (the norms always are).
  at::ScalarType dtype() const { return final_norm.scalar_type(); }
  // Whether some matrix is kept as the GGUF file stores it (then inference only).
  bool has_quantized() const;
};

// How a GGUF file's matrices are loaded: as stored (ggml blocks, 16-bit floats; read in place
// for inference) or dequantized to the compute dtype (training, which needs float weights).
enum class WeightStorage { AsStored, Float };

// The tensors of layer `layer`'s decision head for `config`: Hugging Face name, shape, and
// where it goes in DecisionHeadWeights.
struct DecisionHeadTensor {
  std::string name;
  std::vector<int64_t> shape;
  at::Tensor DecisionHeadWeights::*member;
};
std::vector<DecisionHeadTensor> decision_head_tensors(const ModelConfig& config, int64_t layer);

// Reads every tensor the config requires (the decision heads too when config.dms.mode is
// DmsMode::Adapter), checking names and shapes; errors name the file
// and tensor. `dtype` is at::kFloat or at::kBFloat16.
Weights load_hf_weights(const std::string& dir, const ModelConfig& config, at::ScalarType dtype);
Weights load_gguf_weights(std::shared_ptr<const GgufFile> gguf, const ModelConfig& config,
                          at::ScalarType dtype, WeightStorage storage = WeightStorage::AsStored);

int64_t parameter_count(const Weights& w);
// Bytes of every weight as held in memory (quantized matrices as stored; a tied head once).
int64_t weight_bytes(const Weights& w);

// Every defined tensor of `w` by its Hugging Face name, in checkpoint order, pointing into `w`
// so a trainer can read or replace it (a quantized matrix's tensor holds its blocks as bytes). A tied lm_head is left out (it aliases
// model.embed_tokens.weight); rope_freq_factors are a constant of the rotary embedding, not
// a weight.
struct NamedWeight {
  std::string name;
  at::Tensor* tensor;
};
std::vector<NamedWeight> named_weights(Weights& w);

// A copy of `w` with every tensor on `device` (a tied lm_head stays tied).
Weights weights_on(const Weights& w, const at::Device& device);

}  // namespace dms
