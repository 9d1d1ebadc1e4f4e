#include "dms/engine/dense_cache.h"

#include <cmath>

#include "dms/util/error.h"

namespace dms {

DenseKVCache::DenseKVCache(const ModelConfig& c, at::ScalarType dtype)
    : n_kv_(c.n_kv_heads), head_dim_(c.head_dim), group_(c.group_size()), dtype_(dtype),
      k_(c.n_layers), v_(c.n_layers) {}

void DenseKVCache::reserve(int64_t tokens) {
  if (tokens <= capacity_) return;
  int64_t cap = std::max<int64_t>(tokens, std::max<int64_t>(256, capacity_ * 2));
  for (size_t i = 0; i < k_.size(); ++i) {
    auto grow = [&](at::Tensor& t) {
      auto bigger = at::empty({n_kv_, cap, head_dim_}, dtype_);
      if (t.defined() && length_ > 0) bigger.narrow(1, 0, length_).copy_(t.narrow(1, 0, length_));
      t = bigger;
    };
    grow(k_[i]);
    grow(v_[i]);
  }
  capacity_ = cap;
}

void DenseKVCache::begin_step(int64_t T) {
  reserve(length_ + T);
  step_ = T;
}

void DenseKVCache::end_step() {
  length_ += step_;
  step_ = 0;
}

at::Tensor DenseKVCache::attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor&) {
  const int64_t T = q.size(0);
  k_[layer].narrow(1, length_, T).copy_(k.transpose(0, 1));
  v_[layer].narrow(1, length_, T).copy_(v.transpose(0, 1));
  auto keys = k_[layer].narrow(1, 0, length_ + T);
  auto values = v_[layer].narrow(1, 0, length_ + T);
  return causal_attention(q, keys, values, length_).to(q.scalar_type());
}

int64_t DenseKVCache::bytes_held() const {
  return 2 * static_cast<int64_t>(k_.size()) * n_kv_ * capacity_ * head_dim_ * at::elementSize(dtype_);
}

void DenseKVCache::truncate(int64_t length) {
  if (length < 0 || length > length_) fail("kv cache", "cannot truncate to " + std::to_string(length) + " tokens");
  length_ = length;
}

void DenseKVCache::clear() {
  for (auto& t : k_) t = at::Tensor();
  for (auto& t : v_) t = at::Tensor();
  capacity_ = length_ = step_ = 0;
}

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t first_pos) {
  const int64_t T = q.size(0), nq = q.size(1), D = q.size(2);
  const int64_t n_kv = k.size(0), S = k.size(1), G = nq / n_kv;
  // Query head h uses KV head h / G: group the G heads of each KV head into one batch row.
  auto qg = q.to(at::kFloat).view({T, n_kv, G, D}).permute({1, 2, 0, 3}).reshape({n_kv, G * T, D});
  auto scores = at::bmm(qg, k.to(at::kFloat).transpose(1, 2)) * (1.0 / std::sqrt(static_cast<double>(D)));
  if (T > 1) {
    auto qpos = at::arange(first_pos, first_pos + T, at::kLong).unsqueeze(1);
    auto kpos = at::arange(S, at::kLong).unsqueeze(0);
    auto hidden = (kpos > qpos).repeat({G, 1});  // [G*T, S]
    scores.masked_fill_(hidden.unsqueeze(0), -std::numeric_limits<float>::infinity());
  }
  auto out = at::bmm(at::softmax(scores, -1), v.to(at::kFloat));  // [n_kv, G*T, D]
  return out.view({n_kv, G, T, D}).permute({2, 0, 1, 3}).reshape({T, nq, D});
}

}  // namespace dms
