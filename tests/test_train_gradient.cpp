// Gradient check of the whole retrofit loss: the Trainer's autograd gradients (after one
// micro-batch) against central finite differences, on tiny random models in fp64 with packed
// documents and padding, in Mode B (adapter only; all weights with per-layer decisions, biases
// and tied embeddings) and Mode A (all weights, Qwen3 q/k norms).
//
// The straight-through estimator is not the derivative of the forward (a_hard is piecewise
// constant), so the finite differences are taken of the function whose derivative it is:
// the same loss with frac computed from a_soft(theta) + (a_hard - a_soft)(theta0), a_hard and
// a_soft frozen at the unperturbed point. The decision noise is the trainer's own (StepNoise,
// a fixed function of seed, step and sequence), replayed here.
//
// Tolerance: |autograd - finite difference| <= 1e-3 * (|autograd| + 1e-2), directional
// derivatives along random directions, five-point differences with h = 1e-3. The forward computes
// its norms, RoPE and decision logits in fp64 for fp64 weights. Measured worst cases: 2.8e-8
// (mode_b_adapter), 3.7e-5 (mode_a_all), 3.4e-4 (mode_b_per_layer_all); when those three ran in
// fp32 they were 1.5e-4, 4.6e-4 and 2.4e-3. What still limits the two all-weights cases was not
// traced. A wrong straight-through factor or a missing mask term gives errors of order 1 on the
// directions with derivatives of 0.1 to 1.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>

#include "dms/train/decision_noise.h"
#include "dms/train/trainer.h"
#include "dms/train/training_attention.h"
#include "test_train_helpers.h"

namespace dms::test {
namespace {

constexpr double kStep = 1e-3;
constexpr double kRel = 1e-3;
constexpr double kAbs = 1e-2;

struct GradCase {
  std::string name;
  TinyModelSpec spec;
  TrainTarget target;
};

std::vector<GradCase> cases() {
  const DmsConfig mode_b{.mode = DmsMode::Adapter, .alpha_scale = 1, .alpha_offset = 0.3, .window = 2};
  DmsConfig per_layer = mode_b;
  per_layer.per_layer = true;
  DmsConfig mode_a = mode_b;
  mode_a.mode = DmsMode::QueryChannel;
  return {
      {"mode_b_adapter", {.dms = mode_b, .decision_spread = 1.0}, TrainTarget::Adapter},
      {"mode_b_per_layer_all", {.arch = Arch::Qwen2, .qkv_bias = true, .tied = true, .dms = per_layer}, TrainTarget::All},
      {"mode_a_all", {.arch = Arch::Qwen3, .qk_norm = true, .dms = mode_a}, TrainTarget::All},
  };
}

// The loss at `weights` whose gradient the straight-through estimator computes at theta0.
class ReferenceLoss {
 public:
  ReferenceLoss(const Trainer& trainer, const TrainBatch& batch, const at::Tensor& teacher, const TrainerOptions& o)
      : trainer_(trainer), batch_(batch), teacher_(teacher), options_(o) {
    at::NoGradGuard no_grad;
    evaluate(trainer.student_weights(), &frozen_);
  }

  double operator()(const Weights& w) const {
    at::NoGradGuard no_grad;
    return evaluate(w, nullptr);
  }

 private:
  double evaluate(const Weights& w, std::vector<at::Tensor>* record) const {
    const ModelConfig& c = trainer_.student_config();
    StepNoise noise(options_.seed, 0, 0, batch_.batch, batch_.seq_len);
    TrainingAttention attn(batch_, {.window = c.dms.window, .tau = options_.tau, .per_layer = c.dms.per_layer}, &noise);
    const Transformer student(c, w);
    const at::Tensor hidden = student.forward(batch_.tokens, batch_.positions, attn);
    const double distill = distillation_loss(at::linear(hidden, w.lm_head.tensor), teacher_, batch_.counted).item<double>();
    const auto mask = batch_.counted.to(at::kDouble).unsqueeze(1);
    double flagged = 0;
    for (size_t l = 0; l < attn.decisions().size(); ++l) {
      const auto& d = attn.decisions()[l];
      if (record) record->push_back(d.hard.detach() - d.soft.detach());
      const auto& offset = record ? record->back() : frozen_[l];
      flagged += ((d.soft + offset) * mask).sum().item<double>();
    }
    const double frac = flagged / (c.n_layers * c.n_kv_heads * mask.sum().item<double>());
    return distill + std::max(0.0, options_.schedule.target_fraction(0) - frac);
  }

  const Trainer& trainer_;
  const TrainBatch& batch_;
  at::Tensor teacher_;
  TrainerOptions options_;
  std::vector<at::Tensor> frozen_;  // (a_hard - a_soft)(theta0) per layer
};

// theta0 + h * v on the trained tensors.
Weights perturbed(const Trainer& trainer, const std::vector<at::Tensor>& v, double h) {
  Weights w = trainer.student_weights();
  auto named = named_weights(w);
  for (size_t i = 0; i < trainer.trained_names().size(); ++i)
    for (auto& n : named)
      if (n.name == trainer.trained_names()[i]) *n.tensor = *n.tensor + h * v[i];
  if (trainer.student_config().tie_word_embeddings) w.lm_head = w.embed;
  return w;
}

class TrainGradient : public ::testing::TestWithParam<GradCase> {};

TEST_P(TrainGradient, AutogradMatchesFiniteDifferences) {
  const GradCase& gc = GetParam();
  const ModelConfig config = tiny_config(gc.spec);
  const Weights weights = tiny_weights(config, gc.spec, at::kDouble);
  TrainerOptions o;
  o.target = gc.target;
  o.tau = 0.5;
  o.schedule = {.start = 10, .end = 10};  // target fraction 0.9: the compression loss is active
  o.seed = 3;
  Trainer trainer(config, weights, o);
  const TrainBatch batch = packed_batch({{7, 5}, {14}}, 14, gc.spec.vocab, 4);
  const at::Tensor teacher = trainer.teacher_log_probs(batch);
  const StepLosses losses = trainer.accumulate(batch, teacher);
  EXPECT_GT(losses.compress, 0.1);
  EXPECT_GT(losses.distill, 1e-3) << "the soft mask should move the student away from the teacher";

  const ReferenceLoss loss(trainer, batch, teacher, o);
  EXPECT_NEAR(loss(trainer.student_weights()), losses.loss, 1e-12) << "the trainer's loss is not the reference's";

  const auto& names = trainer.trained_names();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  // Random directions over every trained tensor at once, then along each tensor alone.
  std::vector<std::pair<std::string, std::vector<at::Tensor>>> directions;
  for (int d = 0; d < 3; ++d) {
    std::vector<at::Tensor> v;
    for (const auto& t : trainer.trained()) v.push_back(at::randn(t.sizes(), gen, at::kDouble));
    directions.push_back({"random direction " + std::to_string(d), v});
  }
  for (size_t i = 0; i < names.size(); ++i) {
    std::vector<at::Tensor> v;
    for (size_t j = 0; j < names.size(); ++j)
      v.push_back(j == i ? at::randn(trainer.trained()[j].sizes(), gen, at::kDouble)
                         : at::zeros(trainer.trained()[j].sizes(), at::kDouble));
    directions.push_back({names[i], v});
  }
  double worst = 0;
  int nonzero = 0;
  for (const auto& [what, v] : directions) {
    double autograd = 0;
    for (size_t i = 0; i < v.size(); ++i) autograd += (trainer.trained()[i].grad() * v[i]).sum().item<double>();
    auto at_step = [&](double h) { return loss(perturbed(trainer, v, h)); };
    const double fd = (8 * (at_step(kStep) - at_step(-kStep)) - (at_step(2 * kStep) - at_step(-2 * kStep))) / (12 * kStep);
    const double err = std::abs(autograd - fd) / (std::abs(autograd) + kAbs);
    worst = std::max(worst, err);
    nonzero += std::abs(autograd) > 1e-6;
    EXPECT_LT(err, kRel) << gc.name << ", " << what << ": autograd " << autograd << ", finite difference " << fd;
  }
  EXPECT_GT(nonzero, static_cast<int>(directions.size()) / 2) << "too many zero gradients to test anything";
  std::printf("%s: worst relative difference %.2e over %zu directions\n", gc.name.c_str(), worst, directions.size());
}

INSTANTIATE_TEST_SUITE_P(Models, TrainGradient, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace dms::test
