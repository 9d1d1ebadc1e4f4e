// The retrofit losses (dms-spec section 4) against plain re-derivations written out here with
// loops in double precision, and the compression-ratio schedule.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>

#include "dms/train/losses.h"
#include "test_dms_model_fixtures.h"

namespace dms::test {
namespace {

// sum_v p_s(v) log(p_s(v) / p_t(v)) for one row, from raw logits.
double kl_row(const double* s, const double* t, int64_t V) {
  double ms = s[0], mt = t[0];
  for (int64_t v = 1; v < V; ++v) ms = std::max(ms, s[v]), mt = std::max(mt, t[v]);
  double zs = 0, zt = 0;
  for (int64_t v = 0; v < V; ++v) zs += std::exp(s[v] - ms), zt += std::exp(t[v] - mt);
  double kl = 0;
  for (int64_t v = 0; v < V; ++v) {
    const double ps = std::exp(s[v] - ms) / zs, pt = std::exp(t[v] - mt) / zt;
    kl += ps * std::log(ps / pt);
  }
  return kl;
}

TEST(TrainLosses, DistillationIsTheMeanKlOverCountedRows) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const int64_t N = 9, V = 13;
  const auto student = at::randn({N, V}, gen, at::kDouble) * 2, teacher = at::randn({N, V}, gen, at::kDouble) * 2;
  const auto counted = at::tensor(std::vector<int64_t>{1, 1, 0, 1, 0, 0, 1, 1, 1}, at::kLong).to(at::kBool);
  double sum = 0;
  int64_t n = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (!counted[i].item<bool>()) continue;
    sum += kl_row(student[i].data_ptr<double>(), teacher[i].data_ptr<double>(), V);
    ++n;
  }
  const double ours = distillation_loss(student, teacher_log_probs(teacher), counted).item<double>();
  EXPECT_NEAR(ours, sum / n, 1e-12 * sum / n);
  // In fp32 too, as training computes it: within fp32 rounding of the logits (measured 2e-7).
  const double f32 = distillation_loss(student.to(at::kFloat), teacher_log_probs(teacher.to(at::kFloat)), counted)
                         .item<double>();
  EXPECT_NEAR(f32, sum / n, 1e-5 * sum / n);
  EXPECT_EQ(distillation_loss(student, teacher_log_probs(student), counted).item<double>(), 0.0);
}

// The gradient in the student's logits, against autograd through the loss written out with
// tensor ops, on more rows than the loss takes at a time: fp64 within 1e-12, and bf16 logits (as a
// bf16 retrofit gives them) against the fp32 re-derivation over the same bf16 values within
// bf16 rounding of the gradient (8 bits: 4e-3 of the largest element).
TEST(TrainLosses, DistillationGradientMatchesAutograd) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  const int64_t N = 75, V = 29;
  const auto counted = at::rand({N}, gen, at::kDouble) < 0.7;
  for (auto dtype : {at::kDouble, at::kBFloat16}) {
    const auto ref_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
    const auto student = (at::randn({N, V}, gen, at::kDouble) * 3).to(dtype);
    const auto teacher = teacher_log_probs((at::randn({N, V}, gen, at::kDouble) * 3).to(ref_dtype));
    const auto ours_in = student.clone().requires_grad_(true), ref_in = student.to(ref_dtype).requires_grad_(true);
    const at::Tensor ours = distillation_loss(ours_in, teacher, counted);
    const at::Tensor ls = at::log_softmax(ref_in, -1), mask = counted.to(ref_dtype);
    const at::Tensor ref = ((ls.exp() * (ls - teacher)).sum(-1) * mask).sum() / mask.sum();
    (ours * 2).backward();
    (ref * 2).backward();
    const double tol = dtype == at::kDouble ? 1e-12 : 4e-3;
    EXPECT_NEAR(ours.item<double>(), ref.item<double>(), 1e-12 * ref.item<double>());
    const at::Tensor g = ref_in.grad().to(at::kDouble);
    EXPECT_GT(g.abs().max().item<double>(), 1e-3);
    EXPECT_LE((ours_in.grad().to(at::kDouble) - g).abs().max().item<double>(), tol * g.abs().max().item<double>())
        << at::toString(dtype);
  }
  EXPECT_THROW(distillation_loss(at::randn({2, 3}), at::randn({2, 3}).requires_grad_(true), at::ones({2}, at::kBool)),
               Error);
}

TEST(TrainLosses, EvictionFractionCountsOnlyCountedRows) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  const int64_t L = 3, N = 11, n_kv = 2;
  std::vector<at::Tensor> hard;
  for (int64_t l = 0; l < L; ++l) hard.push_back((at::rand({N, n_kv}, gen, at::kDouble) > 0.4).to(at::kDouble));
  const auto counted = at::rand({N}, gen, at::kDouble) > 0.3;
  // Padding rows all flagged: they must not count.
  for (auto& h : hard) h.index_put_({counted.logical_not()}, 1.0);
  int64_t flagged = 0, slots = 0;
  for (int64_t l = 0; l < L; ++l)
    for (int64_t i = 0; i < N; ++i)
      for (int64_t g = 0; g < n_kv; ++g)
        if (counted[i].item<bool>()) {
          ++slots;
          flagged += hard[l][i][g].item<double>() > 0.5;
        }
  EXPECT_NEAR(eviction_fraction(hard, counted).item<double>(), static_cast<double>(flagged) / slots, 1e-15);
}

TEST(TrainLosses, CompressionLossIsOneSided) {
  const auto frac = at::tensor(0.3, at::kDouble);
  EXPECT_NEAR(compression_loss(frac, 0.75).item<double>(), 0.45, 1e-15);
  EXPECT_EQ(compression_loss(frac, 0.2).item<double>(), 0.0) << "evicting more than the target costs nothing";
}

TEST(CompressionSchedule, LinearRampThenConstant) {
  // The reference recipe: CR 1 -> 16 over 510 steps reaches CR 8 at step 238 (dms-spec section 4).
  const CompressionSchedule reference{.start = 1, .end = 16, .ramp_steps = 510};
  EXPECT_DOUBLE_EQ(reference.ratio(0), 1.0);
  EXPECT_DOUBLE_EQ(reference.ratio(238), 8.0);
  EXPECT_DOUBLE_EQ(reference.ratio(510), 16.0);
  EXPECT_DOUBLE_EQ(reference.ratio(5000), 16.0);
  EXPECT_DOUBLE_EQ(reference.target_fraction(238), 1.0 - 1.0 / 8.0);
  EXPECT_DOUBLE_EQ(reference.target_fraction(0), 0.0);
  for (int64_t s : {1, 17, 100, 509}) EXPECT_NEAR(reference.ratio(s), 1 + 15.0 * s / 510, 1e-12) << "step " << s;
  const CompressionSchedule constant{.start = 1, .end = 8, .ramp_steps = 0};
  EXPECT_DOUBLE_EQ(constant.ratio(0), 8.0);
}

TEST(CompressionSchedule, RejectsRatiosBelowOne) {
  EXPECT_NE(error_of([] { CompressionSchedule{.start = 1, .end = 0.5}.validate("--target-cr"); })
                .find("--target-cr: the target compression ratio must be at least 1"),
            std::string::npos);
  EXPECT_NE(error_of([] { CompressionSchedule{.start = 0.9, .end = 8}.validate("x"); }).find("starting"),
            std::string::npos);
  EXPECT_NE(error_of([] { CompressionSchedule{.ramp_steps = -1}.validate("x"); }).find("negative"), std::string::npos);
}

}  // namespace
}  // namespace dms::test
