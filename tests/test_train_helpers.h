// Shared pieces of the training tests: tiny random models built in the test (any dtype, f64
// included, every architecture option and DMS mode), packed batches of random tokens, and
// the teacher's reference path (each document alone through the dense KV cache).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "dms/model/config.h"
#include "dms/model/transformer.h"
#include "dms/model/weights.h"
#include "dms/train/train_batch.h"

namespace dms::test {

struct TinyModelSpec {
  Arch arch = Arch::Llama;
  int64_t vocab = 48, hidden = 32, intermediate = 48, layers = 2, heads = 4, kv_heads = 2, head_dim = 8;
  bool qk_norm = false, qkv_bias = false, tied = false;
  DmsConfig dms;                 // mode Off: no decision heads
  double decision_spread = 1.0;  // std of scale * dms_proj_alpha(norm(h)) before the offset
  uint64_t seed = 1;
};

ModelConfig tiny_config(const TinyModelSpec& spec);
// Random weights scaled so activations and logits are O(1); Mode B heads when the config has
// DmsMode::Adapter.
Weights tiny_weights(const ModelConfig& config, const TinyModelSpec& spec, at::ScalarType dtype);
Transformer tiny_model(const TinyModelSpec& spec, at::ScalarType dtype);

// Sequences of random tokens: docs[b] lists the document lengths of sequence b; rows after
// them up to seq_len are padding (a document of their own, not counted).
TrainBatch packed_batch(const std::vector<std::vector<int64_t>>& docs, int64_t seq_len, int64_t vocab, uint64_t seed);

// The rows [first, first + n) of a [rows, ...] tensor.
inline at::Tensor rows(const at::Tensor& t, int64_t first, int64_t n) { return t.narrow(0, first, n); }

// Every document of `batch` alone through the dense KV cache (the inference path), logits
// in fp32 stacked in the batch's row order; padding rows are 0.
at::Tensor dense_document_logits(const Transformer& model, const TrainBatch& batch);

}  // namespace dms::test
