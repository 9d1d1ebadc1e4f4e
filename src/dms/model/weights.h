// The transformer's tensors in compute dtype, loaded from a Hugging Face directory or GGUF.
// Tensors whose stored dtype equals the compute dtype point straight into the mapped file.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "dms/model/config.h"

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
  at::Tensor wq, wk, wv, wo;               // [nq*D, H], [nkv*D, H], [nkv*D, H], [H, nq*D]
  at::Tensor bq, bk, bv, bo;               // biases, undefined when the model has none
  at::Tensor q_norm, k_norm;               // [D], Qwen3 only
  at::Tensor mlp_norm;                     // [H]
  at::Tensor w_gate, w_up, w_down;         // [I, H], [I, H], [H, I]
  at::Tensor b_gate, b_up, b_down;         // undefined unless mlp_bias
  DecisionHeadWeights decision;            // DmsMode::Adapter only
};

struct Weights {
  at::Tensor embed;                        // [V, H]
  at::Tensor final_norm;                   // [H]
  at::Tensor lm_head;                      // [V, H]; aliases embed when tied
  at::Tensor rope_freq_factors;            // [D/2] divisors of the rope frequencies (GGUF Llama 3)
  std::vector<LayerWeights> layers;
  std::vector<std::shared_ptr<const void>> keep_alive;  // mapped files the tensors point into
};

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
                          at::ScalarType dtype);

int64_t parameter_count(const Weights& w);

// Every defined tensor of `w` by its Hugging Face name, in checkpoint order, pointing into `w`
// so a trainer can read or replace it. A tied lm_head is left out (it aliases
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
