// The blockwise training attention (blockwise_attention.h) against the attention re-derived here
// with dense T x T scores, on random inputs with several documents per row, every block length
// from 1 to more than the row, windows that make none, some or all pairs far, with and without
// the DMS penalty: values and the gradients of q, k, v and the penalty. Then against central
// finite differences in fp64, and TrainingAttention's two paths (blockwise and dense) against
// each other through the decisions (gradients of q, k, v and the decision logits).
//
// Tolerances: fp64 re-derivation 1e-10 of the largest magnitude (only summation orders and the
// online softmax's rescaling differ); finite differences with h = 1e-5, 1e-7 relative (the truncation error
// is O(h^2)); TrainingAttention in fp32, 1e-5 of the largest magnitude.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "dms/train/blockwise_attention.h"
#include "dms/train/decision_noise.h"
#include "dms/train/training_attention.h"
#include "dms/util/error.h"
#include "test_train_helpers.h"

namespace dms::test {
namespace {

struct Inputs {
  at::Tensor q, k, v, penalty, documents;
};

// documents: per row, the lengths of its documents (summing to T).
Inputs random_inputs(const std::vector<std::vector<int64_t>>& documents, int64_t n_kv, int64_t G, int64_t D,
                     bool penalty, at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  const auto B = static_cast<int64_t>(documents.size());
  int64_t T = 0;
  for (int64_t n : documents[0]) T += n;
  std::vector<int64_t> ids;
  for (const auto& row : documents) {
    int64_t id = 0;
    for (int64_t n : row) ids.insert(ids.end(), n, id++);
  }
  const auto o = at::TensorOptions().dtype(dtype);
  Inputs in{at::randn({B, n_kv, G, T, D}, o), at::randn({B, n_kv, T, D}, o), at::randn({B, n_kv, T, D}, o),
            penalty ? at::log_sigmoid(at::randn({B, n_kv, T}, o) * 2) : at::Tensor(),
            at::tensor(ids, at::kLong).view({B, T})};
  return in;
}

at::Tensor dense_reference(const Inputs& in, int64_t window) {
  const int64_t T = in.q.size(3), D = in.q.size(4);
  at::Tensor s = at::matmul(in.q, in.k.unsqueeze(2).transpose(-1, -2)) / std::sqrt(static_cast<double>(D));
  const at::Tensor pos = at::arange(T, at::kLong);
  const at::Tensor causal = pos.unsqueeze(1) >= pos.unsqueeze(0), far = (pos.unsqueeze(1) - pos.unsqueeze(0)) > window;
  const at::Tensor visible = (in.documents.unsqueeze(2) == in.documents.unsqueeze(1)) & causal;  // [B, T, T]
  if (in.penalty.defined()) s = s + at::where(far, in.penalty.unsqueeze(2).unsqueeze(3), at::zeros({}, s.options()));
  s = s.masked_fill(visible.logical_not().unsqueeze(1).unsqueeze(1), -std::numeric_limits<double>::infinity());
  return at::matmul(at::softmax(s, -1), in.v.unsqueeze(2));
}

// Values and input gradients of sum(out * weights).
struct Result {
  at::Tensor out;
  std::vector<at::Tensor> grads;  // q, k, v, penalty (undefined without one)
};

template <class F>
Result run(const Inputs& base, const at::Tensor& weights, F attention) {
  Inputs in = base;
  for (at::Tensor* t : {&in.q, &in.k, &in.v, &in.penalty})
    if (t->defined()) *t = t->detach().clone().requires_grad_(true);
  Result r;
  r.out = attention(in);
  (r.out * weights).sum().backward();
  for (at::Tensor* t : {&in.q, &in.k, &in.v, &in.penalty}) r.grads.push_back(t->defined() ? t->grad() : at::Tensor());
  r.out = r.out.detach();
  return r;
}

void expect_near(const at::Tensor& ours, const at::Tensor& ref, double rel, const std::string& what) {
  ASSERT_EQ(ours.defined(), ref.defined()) << what;
  if (!ref.defined()) return;
  ASSERT_EQ(ours.sizes(), ref.sizes()) << what;
  const double scale = std::max(1.0, ref.abs().max().item<double>());
  EXPECT_LE((ours - ref).abs().max().item<double>(), rel * scale) << what;
}

TEST(BlockwiseAttention, MatchesTheDenseAttentionAndItsGradients) {
  const std::vector<std::vector<int64_t>> docs = {{10, 20, 7}, {37}, {1, 1, 35}};
  uint64_t seed = 0;
  for (bool penalty : {false, true})
    for (int64_t window : {0, 3, 50})
      for (int64_t block : {1, 4, 8, 37, 64}) {
        const Inputs in = random_inputs(docs, 2, 3, 8, penalty, at::kDouble, ++seed);
        const at::Tensor weights = at::randn(in.q.sizes(), in.q.options());
        const Result ref = run(in, weights, [&](const Inputs& x) { return dense_reference(x, window); });
        const Result ours = run(in, weights, [&](const Inputs& x) {
          return blockwise_training_attention(x.q, x.k, x.v, x.penalty, x.documents, window, block);
        });
        const std::string what = "penalty " + std::to_string(penalty) + " window " + std::to_string(window) +
                                 " block " + std::to_string(block);
        expect_near(ours.out, ref.out, 1e-10, what + ": values");
        const char* names[] = {"q", "k", "v", "penalty"};
        for (int i = 0; i < 4; ++i) expect_near(ours.grads[i], ref.grads[i], 1e-10, what + ": d" + names[i]);
      }
}

// fp32 on the CPU takes its own path (a task per head and query block, one pass per query row
// between the matrix products, per-thread key gradients): against the dense attention in fp64 on
// the same inputs, with three threads so that tasks of one KV head run on different threads.
// Tolerance 2e-5 of the largest magnitude: fp32 rounding in sums of up to 37 terms and the exp
// polynomial's 2e-7 relative error, against values and gradients of order 1-10.
TEST(BlockwiseAttention, CpuFloatPathMatchesTheDenseAttentionInDouble) {
  const std::vector<std::vector<int64_t>> docs = {{10, 20, 7}, {37}, {1, 1, 35}};
  const int threads = at::get_num_threads();
  at::set_num_threads(3);
  uint64_t seed = 100;
  for (bool penalty : {false, true})
    for (int64_t window : {0, 3, 50})
      for (int64_t block : {1, 4, 8, 37, 64}) {
        const Inputs in = random_inputs(docs, 2, 3, 8, penalty, at::kDouble, ++seed);
        Inputs in32 = in;
        for (at::Tensor* t : {&in32.q, &in32.k, &in32.v, &in32.penalty})
          if (t->defined()) *t = t->to(at::kFloat);
        const at::Tensor weights = at::randn(in.q.sizes(), in.q.options());
        const Result ref = run(in, weights, [&](const Inputs& x) { return dense_reference(x, window); });
        const Result ours = run(in32, weights.to(at::kFloat), [&](const Inputs& x) {
          return blockwise_training_attention(x.q, x.k, x.v, x.penalty, x.documents, window, block);
        });
        const std::string what = "penalty " + std::to_string(penalty) + " window " + std::to_string(window) +
                                 " block " + std::to_string(block);
        ASSERT_EQ(ours.out.scalar_type(), at::kFloat);
        expect_near(ours.out.to(at::kDouble), ref.out, 2e-5, what + ": values");
        const char* names[] = {"q", "k", "v", "penalty"};
        for (int i = 0; i < 4; ++i)
          expect_near(ours.grads[i].defined() ? ours.grads[i].to(at::kDouble) : ours.grads[i], ref.grads[i], 2e-5,
                      what + ": d" + names[i]);
      }
  at::set_num_threads(threads);
}

TEST(BlockwiseAttention, GradientsMatchFiniteDifferences) {
  const Inputs in = random_inputs({{4, 5}, {9}}, 1, 2, 4, true, at::kDouble, 77);
  const at::Tensor weights = at::randn(in.q.sizes(), in.q.options());
  auto loss = [&](const Inputs& x) {
    return (blockwise_training_attention(x.q, x.k, x.v, x.penalty, x.documents, 2, 4) * weights).sum();
  };
  const Result r = run(in, weights, [&](const Inputs& x) {
    return blockwise_training_attention(x.q, x.k, x.v, x.penalty, x.documents, 2, 4);
  });
  constexpr double h = 1e-5;
  for (int i = 0; i < 4; ++i)
    for (int trial = 0; trial < 3; ++trial) {
      Inputs plus = in, minus = in;
      at::Tensor* targets[] = {&plus.q, &plus.k, &plus.v, &plus.penalty};
      at::Tensor* others[] = {&minus.q, &minus.k, &minus.v, &minus.penalty};
      const at::Tensor dir = at::randn(targets[i]->sizes(), targets[i]->options());
      *targets[i] = *targets[i] + h * dir;
      *others[i] = *others[i] - h * dir;
      const double fd = (loss(plus).item<double>() - loss(minus).item<double>()) / (2 * h);
      const double analytic = (r.grads[i] * dir).sum().item<double>();
      EXPECT_NEAR(analytic, fd, 1e-7 * std::max(1.0, std::fabs(fd))) << "input " << i << " trial " << trial;
    }
}

TEST(BlockwiseAttention, RejectsInconsistentShapes) {
  const Inputs in = random_inputs({{6}}, 1, 1, 4, true, at::kDouble, 5);
  EXPECT_THROW(blockwise_training_attention(in.q, in.k, in.v, in.penalty, in.documents, 2, 0), Error);
  EXPECT_THROW(blockwise_training_attention(in.q, in.k.narrow(2, 0, 5), in.v, in.penalty, in.documents, 2, 4), Error);
  EXPECT_THROW(blockwise_training_attention(in.q, in.k, in.v, in.penalty.narrow(2, 0, 5), in.documents, 2, 4), Error);
}

// TrainingAttention with blocks of 5 against its dense path, decisions and noise included: the
// outputs and the gradients of q, k, v and the decision logits (through the penalty).
TEST(BlockwiseAttention, TrainingAttentionPathsAgree) {
  const TrainBatch batch = packed_batch({{9, 11, 4}, {24}}, 24, 50, 5);
  const int64_t N = batch.rows(), n_kv = 2, heads = 6, D = 8;
  at::manual_seed(3);
  const at::Tensor q0 = at::randn({N, heads, D}), k0 = at::randn({N, n_kv, D}), v0 = at::randn({N, n_kv, D});
  const at::Tensor logits0 = at::randn({N, n_kv}), weights = at::randn({N, heads, D});
  std::vector<std::vector<at::Tensor>> grads;
  std::vector<at::Tensor> outs;
  for (int64_t block : {0, 5}) {
    StepNoise noise(1, 0, 0, batch.batch, batch.seq_len);
    TrainingAttention attn(batch, {.window = 3, .tau = 0.5, .block = block}, &noise);
    std::vector<at::Tensor> in = {q0.clone().requires_grad_(true), k0.clone().requires_grad_(true),
                                  v0.clone().requires_grad_(true), logits0.clone().requires_grad_(true)};
    const at::Tensor out = attn.attend(0, in[0], in[1], in[2], in[3]);
    (out * weights).sum().backward();
    outs.push_back(out.detach());
    grads.push_back({in[0].grad(), in[1].grad(), in[2].grad(), in[3].grad()});
  }
  expect_near(outs[1], outs[0], 1e-5, "values");
  const char* names[] = {"q", "k", "v", "decision logits"};
  for (int i = 0; i < 4; ++i) expect_near(grads[1][i], grads[0][i], 1e-5, std::string("d") + names[i]);
  EXPECT_GT(grads[0][3].abs().max().item<double>(), 1e-3);  // the penalty really reaches the logits
}

}  // namespace
}  // namespace dms::test
