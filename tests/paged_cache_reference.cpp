#include "paged_cache_reference.h"

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

namespace dms::test {

ModelConfig attention_config(int64_t n_layers, int64_t n_kv_heads, int64_t group, int64_t head_dim) {
  ModelConfig c;
  c.n_layers = n_layers;
  c.n_kv_heads = n_kv_heads;
  c.n_heads = n_kv_heads * group;
  c.head_dim = head_dim;
  c.hidden_size = c.n_heads * head_dim;
  return c;
}

at::Tensor masked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& visible) {
  const int64_t T = q.size(0), n_heads = q.size(1), D = q.size(2), n_kv = k.size(1), G = n_heads / n_kv;
  const auto qd = q.to(at::kDouble), kd = k.to(at::kDouble), vd = v.to(at::kDouble);
  auto out = at::empty({T, n_heads, D}, at::kDouble);
  for (int64_t g = 0; g < n_kv; ++g) {
    auto scores = at::matmul(qd.narrow(1, g * G, G), kd.select(1, g).t()) / std::sqrt(static_cast<double>(D));
    auto hidden = visible.select(2, g).logical_not().unsqueeze(1);  // [T, 1, S]
    scores = scores.masked_fill(hidden, -std::numeric_limits<double>::infinity());
    out.narrow(1, g * G, G).copy_(at::matmul(at::softmax(scores, -1), vd.select(1, g)));
  }
  return out;
}

at::Tensor dms_visibility(int64_t first_pos, int64_t T, const at::Tensor& logits, int64_t window) {
  const int64_t S = logits.size(0), n_kv = logits.size(1);
  auto visible = at::zeros({T, S, n_kv}, at::kBool);
  auto vis = visible.accessor<bool, 3>();
  const auto l = logits.to(at::kFloat).contiguous();
  auto la = l.accessor<float, 2>();
  for (int64_t t = 0; t < T; ++t) {
    const int64_t i = first_pos + t;
    for (int64_t j = 0; j <= i && j < S; ++j)
      for (int64_t g = 0; g < n_kv; ++g) {
        const bool flagged = j < i && la[j + 1][g] > 0;  // for j < i the deciding logit is known
        vis[t][j][g] = !flagged || i - j <= window;
      }
  }
  return visible;
}

std::vector<int32_t> dms_expected_live(const at::Tensor& logits_of_head, int64_t last, int64_t window) {
  const auto l = logits_of_head.to(at::kFloat).contiguous();
  const float* p = l.data_ptr<float>();
  std::vector<int32_t> live;
  for (int64_t j = 0; j <= last; ++j) {
    const bool flagged = j < last && p[j + 1] > 0;
    if (!flagged || j + window + 1 > last + 1) live.push_back(static_cast<int32_t>(j));
  }
  return live;
}

double relative_error(const at::Tensor& ours, const at::Tensor& ref) {
  const auto r = ref.to(at::kDouble);
  const double diff = (ours.to(at::kDouble) - r).abs().max().item<double>();
  return diff / std::max(1.0, r.abs().max().item<double>());
}

at::Tensor stored_values(const at::Tensor& x, at::ScalarType dtype) {
  if (dtype != at::kChar) return x.to(dtype).to(at::kDouble);
  const int64_t D = x.size(-1), group = D % 32 == 0 ? 32 : D;
  std::vector<int64_t> grouped(x.sizes().begin(), x.sizes().end() - 1);
  grouped.push_back(D / group);
  grouped.push_back(group);
  const at::Tensor g = x.to(at::kFloat).reshape(grouped);
  const at::Tensor scale = (std::get<0>(g.abs().max(-1, true)) / 127.0f).to(at::kHalf).to(at::kFloat);
  const at::Tensor levels = at::where(scale > 0, at::round(g / scale).clamp(-127, 127), at::zeros_like(g));
  return (levels * scale).reshape(x.sizes()).to(at::kDouble);
}

DmsDriver::DmsDriver(const ModelConfig& shape, const PagedCacheOptions& options, int64_t window, double flag_fraction,
                     uint64_t seed)
    : reference_dtype(options.kv_dtype),
      shape_(shape),
      options_(options),
      window_(window),
      flag_fraction_(flag_fraction),
      cache_(std::make_unique<PagedKVCache>(shape, options, make_dms_policy({.window = window}))) {
  at::manual_seed(seed);
}

SequenceId DmsDriver::add() {
  const SequenceId id = cache_->add_sequence();
  History h;
  for (int64_t l = 0; l < shape_.n_layers; ++l) {
    h.k.push_back(at::empty({0, shape_.n_kv_heads, shape_.head_dim}, at::kDouble));
    h.v.push_back(at::empty({0, shape_.n_kv_heads, shape_.head_dim}, at::kDouble));
    h.logits.push_back(at::empty({0, shape_.n_kv_heads}, at::kFloat));
  }
  history_.emplace(id, std::move(h));
  return id;
}

SequenceId DmsDriver::fork(SequenceId parent) {
  const SequenceId id = cache_->fork_sequence(parent);
  history_.emplace(id, history_.at(parent));  // the tensors are replaced, never written, by step()
  return id;
}

void DmsDriver::remove(SequenceId id) {
  cache_->remove_sequence(id);
  history_.erase(id);
}

DmsDriver::Inputs DmsDriver::inputs(int64_t T) {
  const int64_t nq = shape_.n_heads, n_kv = shape_.n_kv_heads, D = shape_.head_dim;
  // Queries twice the keys' scale make the softmax peaked enough to exercise its running max.
  return {2 * at::randn({T, nq, D}), at::randn({T, n_kv, D}), at::randn({T, n_kv, D}),
          flag_fraction_ - at::rand({T, n_kv})};
}

at::Tensor DmsDriver::logits(SequenceId id, int64_t layer) const { return history_.at(id).logits[layer]; }

double DmsDriver::step(const std::vector<StepSequence>& step) {
  cache_->begin_step(step);
  const int64_t T = cache_->step_rows();
  double worst = 0;
  // Even layers' outputs are checked after the step ends, odd ones' at once: the cache reuses the
  // memory of an output nobody holds, never of one still held.
  std::vector<std::pair<at::Tensor, at::Tensor>> held;  // output, reference
  for (int64_t layer = 0; layer < shape_.n_layers; ++layer) {
    const Inputs in = inputs(T);
    const at::Tensor out = cache_->attend(layer, in.q, in.k, in.v, in.logits);
    int64_t row = 0;
    for (const auto& s : step) {
      History& h = history_.at(s.id);
      auto rounded = [&](const at::Tensor& x) { return stored_values(x.narrow(0, row, s.n_tokens), reference_dtype); };
      h.k[layer] = at::cat({h.k[layer], rounded(in.k)});
      h.v[layer] = at::cat({h.v[layer], rounded(in.v)});
      h.logits[layer] = at::cat({h.logits[layer], in.logits.narrow(0, row, s.n_tokens)});
      const int64_t first = h.k[layer].size(0) - s.n_tokens;
      const at::Tensor visible = dms_visibility(first, s.n_tokens, h.logits[layer], window_);
      const at::Tensor ref = masked_attention(in.q.narrow(0, row, s.n_tokens), h.k[layer], h.v[layer], visible);
      if (layer % 2 == 0)
        held.emplace_back(out.narrow(0, row, s.n_tokens), ref);
      else
        worst = std::max(worst, relative_error(out.narrow(0, row, s.n_tokens), ref));
      row += s.n_tokens;
    }
  }
  cache_->end_step();
  for (const auto& [out, ref] : held) worst = std::max(worst, relative_error(out, ref));
  worst_ = std::max(worst_, worst);
  return worst;
}

}  // namespace dms::test
