#include "dms/train/blockwise_attention.h"

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "dms/util/error.h"

namespace dms {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What the blocks share: the shapes, and for each query block the first key block any of its
// queries may see (the earliest start of a document among its first queries).
struct Plan {
  int64_t T, block, window;
  double scale;
  std::vector<int64_t> first_key;  // per query block, a key position (rounded down to a block)

  Plan(const at::Tensor& documents, int64_t D, int64_t window_, int64_t block_)
      : T(documents.size(1)), block(block_), window(window_), scale(1.0 / std::sqrt(static_cast<double>(D))) {
    const at::Tensor docs = documents.to(at::kCPU, at::kLong).contiguous();
    const int64_t B = docs.size(0);
    const int64_t* d = docs.const_data_ptr<int64_t>();
    std::vector<int64_t> start(B * T);  // where each token's document starts
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) start[b * T + t] = t > 0 && d[b * T + t] == d[b * T + t - 1] ? start[b * T + t - 1] : t;
    for (int64_t i0 = 0; i0 < T; i0 += block) {
      int64_t first = i0;
      for (int64_t b = 0; b < B; ++b) first = std::min(first, start[b * T + i0]);
      first_key.push_back(first / block * block);
    }
  }
};

// Scores of query block [i0, i0 + bq) against key block [j0, j0 + bk), masks and penalty (when
// not empty) added:
// [B, n_kv, G, bq, bk]. `far` gets the (bq, bk) mask of pairs more than `window` apart.
at::Tensor block_scores(const Plan& p, const at::Tensor& q, const at::Tensor& k, const at::Tensor& penalty,
                        const at::Tensor& documents, int64_t i0, int64_t bq, int64_t j0, int64_t bk, at::Tensor& far) {
  const auto idx = at::TensorOptions().dtype(at::kLong).device(q.device());
  const at::Tensor qi = at::arange(i0, i0 + bq, idx).unsqueeze(1), kj = at::arange(j0, j0 + bk, idx).unsqueeze(0);
  const at::Tensor di = documents.narrow(1, i0, bq).unsqueeze(2), dj = documents.narrow(1, j0, bk).unsqueeze(1);
  const at::Tensor visible = (di == dj) & (qi >= kj).unsqueeze(0);  // [B, bq, bk]
  at::Tensor s = at::matmul(q.narrow(3, i0, bq), k.narrow(2, j0, bk).unsqueeze(2).transpose(-1, -2)).mul_(p.scale);
  far = (qi - kj) > p.window;
  if (penalty.numel() > 0 && i0 + bq - 1 - j0 > p.window) {  // some pair of the blocks is far apart
    const at::Tensor pen = penalty.narrow(2, j0, bk).unsqueeze(2).unsqueeze(3);  // [B, n_kv, 1, 1, bk]
    s.add_(at::where(far, pen, at::zeros({}, pen.options())));
  }
  return s.masked_fill_(visible.logical_not().unsqueeze(1).unsqueeze(1), -std::numeric_limits<double>::infinity());
}

struct BlockwiseAttention : torch::autograd::Function<BlockwiseAttention> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& penalty, const at::Tensor& documents, int64_t window, int64_t block) {
    const Plan p(documents, q.size(4), window, block);
    at::Tensor out = at::empty_like(q), lse = at::empty(q.sizes().slice(0, 4), q.options());
    at::Tensor far;
    for (int64_t i0 = 0, ib = 0; i0 < p.T; i0 += block, ++ib) {
      const int64_t bq = std::min(block, p.T - i0);
      at::Tensor m = at::full(lse.narrow(3, i0, bq).sizes(), -std::numeric_limits<double>::infinity(), q.options());
      at::Tensor l = at::zeros_like(m), acc = at::zeros_like(out.narrow(3, i0, bq));
      for (int64_t j0 = p.first_key[ib]; j0 < i0 + bq; j0 += block) {
        const int64_t bk = std::min(block, p.T - j0);
        const at::Tensor s = block_scores(p, q, k, penalty, documents, i0, bq, j0, bk, far);
        const at::Tensor m_new = at::maximum(m, std::get<0>(s.max(-1)));
        // A row with nothing visible yet keeps m = -inf: shift by 0 there, its exps are 0 anyway.
        const at::Tensor shift = at::where(at::isinf(m_new), at::zeros({}, m_new.options()), m_new);
        const at::Tensor pr = (s - shift.unsqueeze(-1)).exp_();
        const at::Tensor alpha = (m - shift).exp_();
        l = l * alpha + pr.sum(-1);
        acc = acc * alpha.unsqueeze(-1) + at::matmul(pr, v.narrow(2, j0, bk).unsqueeze(2));
        m = m_new;
      }
      // Every query sees itself, so l > 0 and m is finite.
      out.narrow(3, i0, bq).copy_(acc / l.unsqueeze(-1));
      lse.narrow(3, i0, bq).copy_(m + l.log());
    }
    ctx->save_for_backward({q, k, v, penalty, documents, out, lse});
    ctx->saved_data["window"] = window;
    ctx->saved_data["block"] = block;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &penalty = saved[3], &documents = saved[4],
                     &out = saved[5], &lse = saved[6];
    const int64_t window = ctx->saved_data["window"].toInt(), block = ctx->saved_data["block"].toInt();
    const at::Tensor dout = grads[0].contiguous();
    const Plan p(documents, q.size(4), window, block);
    const at::Tensor delta = (dout * out).sum(-1);  // [B, n_kv, G, T]
    at::Tensor dq = at::zeros_like(q), dk = at::zeros_like(k), dv = at::zeros_like(v);
    at::Tensor dpen = penalty.numel() > 0 ? at::zeros_like(penalty) : at::Tensor();
    at::Tensor far;
    for (int64_t i0 = 0, ib = 0; i0 < p.T; i0 += block, ++ib) {
      const int64_t bq = std::min(block, p.T - i0);
      const at::Tensor qi = q.narrow(3, i0, bq), doi = dout.narrow(3, i0, bq);
      at::Tensor dqi = dq.narrow(3, i0, bq);
      for (int64_t j0 = p.first_key[ib]; j0 < i0 + bq; j0 += block) {
        const int64_t bk = std::min(block, p.T - j0);
        const at::Tensor s = block_scores(p, q, k, penalty, documents, i0, bq, j0, bk, far);
        const at::Tensor pr = (s - lse.narrow(3, i0, bq).unsqueeze(-1)).exp_();  // [B, n_kv, G, bq, bk]
        const at::Tensor kj = k.narrow(2, j0, bk).unsqueeze(2), vj = v.narrow(2, j0, bk).unsqueeze(2);
        const at::Tensor ds = pr * (at::matmul(doi, vj.transpose(-1, -2)) - delta.narrow(3, i0, bq).unsqueeze(-1));
        dqi.add_(at::matmul(ds, kj), p.scale);
        dk.narrow(2, j0, bk).add_(at::matmul(ds.transpose(-1, -2), qi).sum(2), p.scale);
        dv.narrow(2, j0, bk).add_(at::matmul(pr.transpose(-1, -2), doi).sum(2));
        if (dpen.defined()) dpen.narrow(2, j0, bk).add_(at::where(far, ds, at::zeros({}, ds.options())).sum({2, 3}));
      }
    }
    return {dq, dk, dv, dpen, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor blockwise_training_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const at::Tensor& penalty, const at::Tensor& documents, int64_t window,
                                        int64_t block) {
  if (block < 1) fail("training attention", "the block length must be at least 1");
  if (q.dim() != 5 || k.dim() != 4 || v.sizes() != k.sizes() || q.size(0) != k.size(0) || q.size(1) != k.size(1) ||
      q.size(3) != k.size(2) || q.size(4) != k.size(3) || documents.dim() != 2 || documents.size(0) != q.size(0) ||
      documents.size(1) != q.size(3) || (penalty.defined() && penalty.sizes() != k.sizes().slice(0, 3)))
    fail("training attention", "blockwise attention: inconsistent shapes");
  // A custom function's inputs must be defined tensors: no penalty travels as an empty one.
  return BlockwiseAttention::apply(q.contiguous(), k.contiguous(), v.contiguous(),
                                   penalty.defined() ? penalty.contiguous() : at::empty({0}, q.options()),
                                   documents.to(q.device()), window, block);
}

}  // namespace dms
