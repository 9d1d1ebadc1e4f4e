#include "dms/train/blockwise_attention.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "dms/kernels/cpu/vector_math.h"
#include "dms/util/error.h"

namespace dms {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What the blocks share: the shapes, where each token's document starts, and for each query
// block the first key block any of its queries may see (the earliest start of a document among
// its first queries).
struct Plan {
  int64_t T, block, window;
  double scale;
  std::vector<int64_t> start;      // [B * T]: the position where each token's document starts
  std::vector<int64_t> first_key;  // per query block, a key position (rounded down to a block)

  Plan(const at::Tensor& documents, int64_t D, int64_t window_, int64_t block_)
      : T(documents.size(1)), block(block_), window(window_), scale(1.0 / std::sqrt(static_cast<double>(D))) {
    const at::Tensor docs = documents.to(at::kCPU, at::kLong).contiguous();
    const int64_t B = docs.size(0);
    const int64_t* d = docs.const_data_ptr<int64_t>();
    start.resize(B * T);
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

// The CPU path for fp32: a task per (row, head, query block), each key block's scores in a
// scratch matrix from one matrix product, and everything between the products (scale, penalty,
// what a query may not see, the online softmax's exps) in one pass per query row. The keys a
// query i may see in a block are one contiguous range: from its document's start, or the block's,
// to i; those more than `window` back (j < i - window) take the penalty.
struct CpuHead {
  const float *q, *k, *v, *penalty;  // this head's rows: q [T, D], k and v [T, D], penalty [T] or nullptr
  const int64_t* start;              // [T] of this head's batch row
};

// A row-major [rows, cols] fp32 matrix over p, leading dimension ld.
at::Tensor mat(const float* p, int64_t rows, int64_t cols, int64_t ld) {
  return at::from_blob(const_cast<float*>(p), {rows, cols}, {ld, 1}, at::TensorOptions().dtype(at::kFloat));
}

// Query i = i0 + r against the key block at j0 of length bk: its visible columns [lo, hi) and the
// end of its far columns (those below take the penalty).
struct Span {
  int64_t lo, hi, far_end;
};
Span span(const Plan& p, const CpuHead& h, int64_t i, int64_t j0, int64_t bk) {
  const int64_t lo = std::clamp<int64_t>(h.start[i] - j0, 0, bk), hi = std::clamp<int64_t>(i + 1 - j0, lo, bk);
  return {lo, hi, std::clamp(i - p.window - j0, lo, hi)};
}

// Row s (raw q.k products) becomes scale * s + penalty over [lo, hi), with 0 elsewhere left to the caller.
void scores_row(const Plan& p, const CpuHead& h, const Span& c, int64_t j0, float* s) {
  const auto scale = static_cast<float>(p.scale);
  for (int64_t j = c.lo; j < c.hi; ++j) s[j] *= scale;
  if (h.penalty)
    for (int64_t j = c.lo; j < c.far_end; ++j) s[j] += h.penalty[j0 + j];
}

void zero_outside(float* row, const Span& c, int64_t n) {
  std::fill(row, row + c.lo, 0.0f);
  std::fill(row + c.hi, row + n, 0.0f);
}

// Denormal floats flushed to zero (x86's FTZ and DAZ) while it lives, on this thread. A trained
// head's penalties push scores 100 and more below a row's largest, whose weights and their
// products then fall below FLT_MIN, and every multiply-add that meets a denormal takes a
// microcode assist: they made the matrix products several times slower. Flushed, such a weight
// is 0 instead of under 1e-38 of the row's largest, which no sum in fp32 can see.
class FlushDenormals {
 public:
#if defined(__x86_64__) || defined(__i386__)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#endif
};

template <class F>
void for_each_task(const Plan& p, const at::Tensor& q, const at::Tensor& k, const at::Tensor& penalty, F body) {
  const int64_t B = q.size(0), n_kv = q.size(1), G = q.size(2), T = p.T, D = q.size(4);
  const int64_t blocks = (T + p.block - 1) / p.block;
  const float *qp = q.const_data_ptr<float>(), *kp = k.const_data_ptr<float>();
  const float* pp = penalty.numel() > 0 ? penalty.const_data_ptr<float>() : nullptr;
  // Heads outermost: each thread's contiguous share of the tasks holds every query block alike.
  at::parallel_for(0, B * n_kv * G * blocks, 1, [&](int64_t begin, int64_t end) {
    const FlushDenormals flush;
    std::vector<float> scratch(2 * p.block * p.block);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t head = task / blocks, ib = task % blocks, kv = head / G;
      const CpuHead h{qp + head * T * D, kp + kv * T * D, nullptr, pp ? pp + kv * T : nullptr,
                      p.start.data() + kv / n_kv * T};
      body(h, head, kv, ib, scratch.data());
    }
  });
}

void cpu_forward(const Plan& p, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 const at::Tensor& penalty, at::Tensor& out, at::Tensor& lse) {
  const int64_t T = p.T, D = q.size(4);
  const float* vp = v.const_data_ptr<float>();
  float *op = out.mutable_data_ptr<float>(), *lp = lse.mutable_data_ptr<float>();
  for_each_task(p, q, k, penalty, [&](CpuHead h, int64_t head, int64_t kv, int64_t ib, float* s) {
    h.v = vp + kv * T * D;
    const int64_t i0 = ib * p.block, bq = std::min(p.block, T - i0);
    float *m = lp + head * T + i0, *acc = op + (head * T + i0) * D;  // lse's rows hold the running max
    std::fill(m, m + bq, -std::numeric_limits<float>::infinity());
    std::vector<float> l(bq, 0.0f);
    std::fill(acc, acc + bq * D, 0.0f);
    at::Tensor accm = mat(acc, bq, D, D);
    for (int64_t j0 = p.first_key[ib]; j0 < i0 + bq; j0 += p.block) {
      const int64_t bk = std::min(p.block, T - j0);
      at::Tensor sm = mat(s, bq, bk, bk);
      at::mm_out(sm, mat(h.q + i0 * D, bq, D, D), mat(h.k + j0 * D, bk, D, D).t());
      for (int64_t r = 0; r < bq; ++r) {
        float* row = s + r * bk;
        const Span c = span(p, h, i0 + r, j0, bk);
        zero_outside(row, c, bk);
        if (c.lo == c.hi) continue;
        scores_row(p, h, c, j0, row);
        const float m_new = std::max(m[r], cpu::max_of(row + c.lo, c.hi - c.lo));
        const float alpha = m[r] == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(m[r] - m_new);
        cpu::exp_shifted(row + c.lo, m_new, c.hi - c.lo);
        l[r] = l[r] * alpha + cpu::sum(row + c.lo, c.hi - c.lo);
        cpu::scale_in_place(acc + r * D, alpha, D);
        m[r] = m_new;
      }
      accm.addmm_(sm, mat(h.v + j0 * D, bk, D, D));
    }
    // Every query sees itself, so l > 0 and m is finite.
    for (int64_t r = 0; r < bq; ++r) {
      cpu::scale_in_place(acc + r * D, 1.0f / l[r], D);
      m[r] += std::log(l[r]);
    }
  });
}

// The keys' and the penalty's gradients collect from every query block and head of a KV head:
// each thread adds into its own copy, summed at the end.
void cpu_backward(const Plan& p, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& penalty, const at::Tensor& dout, const at::Tensor& lse, const at::Tensor& delta,
                  at::Tensor& dq, at::Tensor& dk, at::Tensor& dv, at::Tensor& dpen) {
  const int64_t T = p.T, D = q.size(4), threads = at::get_num_threads();
  const float *vp = v.const_data_ptr<float>(), *dop = dout.const_data_ptr<float>(),
              *lp = lse.const_data_ptr<float>(), *delp = delta.const_data_ptr<float>();
  float* dqp = dq.mutable_data_ptr<float>();
  at::Tensor dk_t = at::zeros({threads, k.numel()}, k.options()), dv_t = at::zeros_like(dk_t);
  at::Tensor dpen_t = dpen.defined() ? at::zeros({threads, dpen.numel()}, k.options()) : at::Tensor();
  for_each_task(p, q, k, penalty, [&](CpuHead h, int64_t head, int64_t kv, int64_t ib, float* s) {
    h.v = vp + kv * T * D;
    const int64_t tid = at::get_thread_num();
    float *dkp = dk_t[tid].mutable_data_ptr<float>() + kv * T * D, *dvp = dv_t[tid].mutable_data_ptr<float>() + kv * T * D;
    float* dpp = dpen_t.defined() ? dpen_t[tid].mutable_data_ptr<float>() + kv * T : nullptr;
    const int64_t i0 = ib * p.block, bq = std::min(p.block, T - i0);
    const float *qi = h.q + i0 * D, *doi = dop + (head * T + i0) * D, *lse_i = lp + head * T + i0,
                *delta_i = delp + head * T + i0;
    float* ds = s + p.block * p.block;
    at::Tensor qm = mat(qi, bq, D, D), dom = mat(doi, bq, D, D), dqm = mat(dqp + (head * T + i0) * D, bq, D, D);
    for (int64_t j0 = p.first_key[ib]; j0 < i0 + bq; j0 += p.block) {
      const int64_t bk = std::min(p.block, T - j0);
      at::Tensor sm = mat(s, bq, bk, bk), dsm = mat(ds, bq, bk, bk), km = mat(h.k + j0 * D, bk, D, D);
      at::mm_out(sm, qm, km.t());
      at::mm_out(dsm, dom, mat(h.v + j0 * D, bk, D, D).t());  // dP = dO V^T
      for (int64_t r = 0; r < bq; ++r) {
        float *prow = s + r * bk, *drow = ds + r * bk;
        const Span c = span(p, h, i0 + r, j0, bk);
        zero_outside(prow, c, bk);
        zero_outside(drow, c, bk);
        if (c.lo == c.hi) continue;
        scores_row(p, h, c, j0, prow);
        cpu::exp_shifted(prow + c.lo, lse_i[r], c.hi - c.lo);
        for (int64_t j = c.lo; j < c.hi; ++j) drow[j] = prow[j] * (drow[j] - delta_i[r]);
        if (dpp)
          for (int64_t j = c.lo; j < c.far_end; ++j) dpp[j0 + j] += drow[j];
      }
      dqm.addmm_(dsm, km, 1.0, p.scale);
      mat(dkp + j0 * D, bk, D, D).addmm_(dsm.t(), qm, 1.0, p.scale);
      mat(dvp + j0 * D, bk, D, D).addmm_(sm.t(), dom);
    }
  });
  dk.copy_(dk_t.sum(0).view(dk.sizes()));
  dv.copy_(dv_t.sum(0).view(dv.sizes()));
  if (dpen.defined()) dpen.copy_(dpen_t.sum(0).view(dpen.sizes()));
}

bool on_cpu_fp32(const at::Tensor& q) { return q.device().is_cpu() && q.scalar_type() == at::kFloat; }

// The path for any device and float dtype, in tensor operations over every head at once.
void tensor_forward(const Plan& p, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& penalty, const at::Tensor& documents, at::Tensor& out, at::Tensor& lse) {
  at::Tensor far;
  for (int64_t i0 = 0, ib = 0; i0 < p.T; i0 += p.block, ++ib) {
    const int64_t bq = std::min(p.block, p.T - i0);
    at::Tensor m = at::full(lse.narrow(3, i0, bq).sizes(), -std::numeric_limits<double>::infinity(), q.options());
    at::Tensor l = at::zeros_like(m), acc = at::zeros_like(out.narrow(3, i0, bq));
    for (int64_t j0 = p.first_key[ib]; j0 < i0 + bq; j0 += p.block) {
      const int64_t bk = std::min(p.block, p.T - j0);
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
}

void tensor_backward(const Plan& p, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& penalty, const at::Tensor& documents, const at::Tensor& dout,
                     const at::Tensor& lse, const at::Tensor& delta, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv,
                     at::Tensor& dpen) {
  at::Tensor far;
  for (int64_t i0 = 0, ib = 0; i0 < p.T; i0 += p.block, ++ib) {
    const int64_t bq = std::min(p.block, p.T - i0);
    const at::Tensor qi = q.narrow(3, i0, bq), doi = dout.narrow(3, i0, bq);
    at::Tensor dqi = dq.narrow(3, i0, bq);
    for (int64_t j0 = p.first_key[ib]; j0 < i0 + bq; j0 += p.block) {
      const int64_t bk = std::min(p.block, p.T - j0);
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
}

struct BlockwiseAttention : torch::autograd::Function<BlockwiseAttention> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& penalty, const at::Tensor& documents, int64_t window, int64_t block) {
    const Plan p(documents, q.size(4), window, block);
    at::Tensor out = at::empty_like(q), lse = at::empty(q.sizes().slice(0, 4), q.options());
    if (on_cpu_fp32(q)) cpu_forward(p, q, k, v, penalty, out, lse);
    else tensor_forward(p, q, k, v, penalty, documents, out, lse);
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
    if (on_cpu_fp32(q)) cpu_backward(p, q, k, v, penalty, dout, lse, delta, dq, dk, dv, dpen);
    else tensor_backward(p, q, k, v, penalty, documents, dout, lse, delta, dq, dk, dv, dpen);
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
