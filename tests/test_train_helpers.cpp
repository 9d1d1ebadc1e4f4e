#include "test_train_helpers.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "dms/engine/dense_cache.h"

namespace dms::test {

ModelConfig tiny_config(const TinyModelSpec& s) {
  ModelConfig c;
  c.arch = s.arch;
  c.model_type = arch_name(s.arch);
  c.vocab_size = s.vocab;
  c.hidden_size = s.hidden;
  c.intermediate_size = s.intermediate;
  c.n_layers = s.layers;
  c.n_heads = s.heads;
  c.n_kv_heads = s.kv_heads;
  c.head_dim = s.head_dim;
  c.max_position = 4096;
  c.rms_eps = 1e-6;
  c.tie_word_embeddings = s.tied;
  c.qkv_bias = s.qkv_bias;
  c.qk_norm = s.qk_norm;
  c.eos_ids = {2};
  c.bos_id = 1;
  c.dms = s.dms;
  c.validate("tiny model");
  return c;
}

Weights tiny_weights(const ModelConfig& c, const TinyModelSpec& s, at::ScalarType dtype) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(s.seed);
  auto normal = [&](std::vector<int64_t> shape, double std) { return at::randn(shape, gen, at::kDouble) * std; };
  auto linear = [&](int64_t out, int64_t in) { return normal({out, in}, 1.0 / std::sqrt(static_cast<double>(in))); };
  auto norm = [&](int64_t n) { return 1.0 + normal({n}, 0.1); };
  const int64_t H = c.hidden_size, D = c.head_dim, Q = c.n_heads * D, KV = c.n_kv_heads * D, I = c.intermediate_size;
  Weights w;
  w.embed = normal({c.vocab_size, H}, 1.0);
  w.final_norm = norm(H);
  w.lm_head = c.tie_word_embeddings ? w.embed : linear(c.vocab_size, H) * 2.0;
  for (int64_t i = 0; i < c.n_layers; ++i) {
    LayerWeights l;
    l.attn_norm = norm(H);
    l.wq = linear(Q, H) * 2.0;  // sharper attention than a unit-variance init gives
    l.wk = linear(KV, H) * 2.0;
    l.wv = linear(KV, H);
    l.wo = linear(H, Q);
    if (c.qkv_bias) {
      l.bq = normal({Q}, 0.1);
      l.bk = normal({KV}, 0.1);
      l.bv = normal({KV}, 0.1);
    }
    if (c.qk_norm) {
      l.q_norm = norm(D) * 2.0;
      l.k_norm = norm(D);
    }
    l.mlp_norm = norm(H);
    l.w_gate = linear(I, H);
    l.w_up = linear(I, H);
    l.w_down = linear(H, I);
    if (c.dms.mode == DmsMode::Adapter) {
      l.decision.norm = norm(H);
      l.decision.proj = linear(c.n_kv_heads, H) * (s.decision_spread / c.dms.alpha_scale);
      if (c.qkv_bias) l.decision.bias = normal({c.n_kv_heads}, 0.1 / c.dms.alpha_scale);
    }
    w.layers.push_back(std::move(l));
  }
  if (c.tie_word_embeddings) w.lm_head = w.embed;
  for (auto& [name, t] : named_weights(w)) *t = t->to(dtype).contiguous();
  if (c.tie_word_embeddings) w.lm_head = w.embed;
  return w;
}

Transformer tiny_model(const TinyModelSpec& spec, at::ScalarType dtype) {
  ModelConfig c = tiny_config(spec);
  return Transformer(c, tiny_weights(c, spec, dtype));
}

TrainBatch packed_batch(const std::vector<std::vector<int64_t>>& docs, int64_t seq_len, int64_t vocab, uint64_t seed) {
  const int64_t B = static_cast<int64_t>(docs.size());
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto tokens = at::randint(vocab, {B, seq_len}, gen, at::kLong);
  auto documents = at::empty({B, seq_len}, at::kLong);
  auto counted = at::zeros({B, seq_len}, at::kBool);
  for (int64_t b = 0; b < B; ++b) {
    int64_t row = 0, id = 0;
    for (int64_t len : docs[b]) {
      documents[b].narrow(0, row, len).fill_(id++);
      counted[b].narrow(0, row, len).fill_(true);
      row += len;
    }
    if (row < seq_len) documents[b].narrow(0, row, seq_len - row).fill_(id);
  }
  return make_train_batch(tokens, documents, counted);
}

at::Tensor dense_document_logits(const Transformer& model, const TrainBatch& batch) {
  auto out = at::zeros({batch.rows(), model.config().vocab_size}, at::kFloat);
  const auto docs = batch.documents, counted = batch.counted;
  int64_t r = 0;
  while (r < batch.rows()) {
    int64_t end = r + 1;
    while (end < batch.rows() && end % batch.seq_len != 0 && docs[end].item<int64_t>() == docs[r].item<int64_t>()) ++end;
    if (counted[r].item<bool>()) {
      DenseKVCache cache(model.config(), model.dtype());
      cache.begin_step(end - r);
      auto hidden = model.forward(batch.tokens.narrow(0, r, end - r), at::arange(end - r, at::kLong), cache);
      cache.end_step();
      out.narrow(0, r, end - r).copy_(model.logits(hidden));
    }
    r = end;
  }
  return out;
}

}  // namespace dms::test
