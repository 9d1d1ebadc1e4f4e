#include "dms/train/trainer.h"

#include <ATen/core/grad_mode.h>

#include <limits>

#include "dms/model/device.h"
#include "dms/train/decision_noise.h"
#include "dms/train/training_attention.h"
#include "dms/util/error.h"

namespace dms {
namespace {

constexpr const char* kWhere = "trainer";

// Mode B heads as dms-spec section 1 starts them: projection (and bias) 0, norm weight 1.
void add_fresh_decision_heads(const ModelConfig& c, Weights& w) {
  const auto like = w.final_norm.options();
  for (int64_t i = 0; i < c.n_layers; ++i)
    for (const auto& t : decision_head_tensors(c, i)) {
      const bool is_norm = t.member == &DecisionHeadWeights::norm;
      w.layers[i].decision.*t.member = is_norm ? at::ones(t.shape, like) : at::zeros(t.shape, like);
    }
}

bool trains(TrainTarget target, const std::string& name) {
  return target == TrainTarget::All || name.find(".dms_proj_alpha") != std::string::npos;
}

}  // namespace

std::string train_target_name(TrainTarget target) { return target == TrainTarget::Adapter ? "adapter" : "all"; }

TrainTarget parse_train_target(const std::string& name, const std::string& where) {
  if (name == "adapter") return TrainTarget::Adapter;
  if (name == "all") return TrainTarget::All;
  fail(where, "unknown training target '" + name + "' (expected adapter or all)");
}

Trainer::Trainer(const Model& model, const TrainerOptions& options)
    : Trainer(model.transformer->config(), model.transformer->weights(), options) {}

Trainer::Trainer(const ModelConfig& config, const Weights& weights, const TrainerOptions& options)
    : config_(config), options_(options), seed_(options.seed) {
  options.schedule.validate(kWhere);
  require_device(options.device, kWhere);
  if (!(options.tau > 0)) fail(kWhere, "tau must be a positive number");
  if (options.attention_block < 0) fail(kWhere, "the attention block length must not be negative");
  if (options.accumulation < 1) fail(kWhere, "gradient accumulation needs at least one micro-batch per step");
  const auto dtype = weights.dtype();
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kDouble)
    fail(kWhere, "weights must be f32 or bf16 (or f64)");
  if (weights.has_quantized())
    fail(kWhere, "the weights are quantized as the GGUF file stores them; training needs them loaded as float "
                 "(WeightStorage::Float)");

  // The teacher: the model as given, eviction disabled (Mode A still lends its channel).
  weights_ = weights_on(weights, options.device);
  ModelConfig teacher_config = config;
  teacher_config.dms.eviction_disabled = true;
  teacher_ = std::make_unique<Transformer>(teacher_config, weights_);

  options.dms.apply(config_.dms, kWhere);
  if (config_.dms.mode == DmsMode::Off) config_.dms.mode = DmsMode::Adapter;
  config_.dms.eviction_disabled = false;
  if (options.target == TrainTarget::Adapter && config_.dms.mode != DmsMode::Adapter)
    fail(kWhere, "training the adapter only needs Mode B decision heads, but the model uses Mode A (the borrowed "
                 "query channel has no weights of its own); train all weights instead");
  if (config_.dms.mode == DmsMode::Adapter && !weights_.layers[0].decision.proj.defined())
    add_fresh_decision_heads(config_, weights_);

  tied_ = weights_.lm_head.is_same(weights_.embed);
  const auto master_dtype = dtype == at::kBFloat16 ? at::kFloat : dtype;
  const auto named = named_weights(weights_);
  for (size_t i = 0; i < named.size(); ++i) {
    if (!trains(options.target, named[i].name)) continue;
    names_.push_back(named[i].name);
    slots_.push_back(i);
    masters_.push_back(named[i].tensor->detach().to(master_dtype, /*non_blocking=*/false, /*copy=*/true)
                           .contiguous()
                           .requires_grad_(true));
  }
  optimizer_ = std::make_unique<AdamW>(masters_, options.adamw);
}

Weights Trainer::forward_weights(bool detached, bool compute_dtype) const {
  Weights w = weights_;
  auto named = named_weights(w);
  const auto dtype = weights_.dtype();
  for (size_t i = 0; i < masters_.size(); ++i) {
    const at::Tensor m = detached ? masters_[i].detach() : masters_[i];
    *named[slots_[i]].tensor = compute_dtype && m.scalar_type() != dtype ? m.to(dtype) : m;
  }
  if (tied_) w.lm_head = w.embed;
  return w;
}

Weights Trainer::student_weights() const {
  at::NoGradGuard no_grad;
  return forward_weights(/*detached=*/true, /*compute_dtype=*/true);
}

at::Tensor Trainer::teacher_log_probs(const TrainBatch& given) const {
  given.validate(config_.vocab_size, "training batch");
  return teacher_forward(given.to(options_.device));
}

at::Tensor Trainer::teacher_forward(const TrainBatch& batch) const {
  at::NoGradGuard no_grad;
  TrainingAttention attn(batch, {.window = config_.dms.window, .tau = options_.tau, .block = options_.attention_block},
                         nullptr);
  const at::Tensor hidden = teacher_->forward(batch.tokens, batch.positions, attn);
  return dms::teacher_log_probs(teacher_->logits(hidden));
}

StepLosses Trainer::accumulate(const TrainBatch& given, const at::Tensor& teacher) {
  given.validate(config_.vocab_size, "training batch");
  const TrainBatch batch = given.to(options_.device);
  if (config_.dms.window >= batch.seq_len - 1)
    fail(kWhere, "the DMS window (" + std::to_string(config_.dms.window) + ") leaves nothing to evict in sequences of " +
                     std::to_string(batch.seq_len) + " tokens; it must be below the sequence length minus 1");
  const at::Tensor teacher_lp = teacher.defined() ? teacher.to(options_.device) : teacher_forward(batch);
  if (teacher_lp.dim() != 2 || teacher_lp.size(0) != batch.rows() || teacher_lp.size(1) != config_.vocab_size)
    fail(kWhere, "teacher log-probabilities must be [B*T, vocab_size]");

  const int64_t first = batch.first_sequence >= 0 ? batch.first_sequence : sequences_;
  StepNoise noise(seed_, step_, first, batch.batch, batch.seq_len);
  TrainingAttention attn(batch,
                         {.window = config_.dms.window, .tau = options_.tau, .per_layer = config_.dms.per_layer,
                          .block = options_.attention_block},
                         &noise);
  const Transformer student(config_, forward_weights(/*detached=*/false, /*compute_dtype=*/true));
  const at::Tensor hidden = student.forward(batch.tokens, batch.positions, attn);
  const at::Tensor distill = distillation_loss(student.logits(hidden), teacher_lp, batch.counted);

  std::vector<at::Tensor> hard;
  for (const auto& d : attn.decisions()) hard.push_back(d.hard);
  if (static_cast<int64_t>(hard.size()) != config_.n_layers) fail(kWhere, "a layer made no eviction decisions");
  const at::Tensor frac = eviction_fraction(hard, batch.counted);
  const at::Tensor compress = compression_loss(frac, options_.schedule.target_fraction(step_));
  const at::Tensor loss = distill + compress;
  (loss / static_cast<double>(options_.accumulation)).backward();

  ++micro_;
  sequences_ += batch.batch;
  return {.loss = loss.item<double>(), .distill = distill.item<double>(), .compress = compress.item<double>(),
          .frac = frac.item<double>(), .counted_rows = batch.counted_rows()};
}

double Trainer::apply_gradients() {
  if (micro_ != options_.accumulation)
    fail(kWhere, "a step needs " + std::to_string(options_.accumulation) + " accumulated micro-batches, not " +
                     std::to_string(micro_));
  if (options_.reduce_gradients) options_.reduce_gradients(masters_);
  const double norm = clip_grad_norm(masters_, options_.max_grad_norm > 0 ? options_.max_grad_norm : std::numeric_limits<double>::infinity());
  optimizer_->step();
  optimizer_->zero_grad();
  ++step_;
  micro_ = 0;
  sequences_ = 0;
  return norm;
}

StepResult Trainer::step(const std::vector<TrainBatch>& micro_batches) {
  if (static_cast<int64_t>(micro_batches.size()) != options_.accumulation)
    fail(kWhere, "a step takes " + std::to_string(options_.accumulation) + " micro-batches, not " +
                     std::to_string(micro_batches.size()));
  StepResult r;
  r.step = step_;
  r.target_cr = options_.schedule.ratio(step_);
  r.target_frac = options_.schedule.target_fraction(step_);
  for (const auto& batch : micro_batches) {
    const StepLosses l = accumulate(batch);
    r.loss += l.loss / micro_batches.size();
    r.distill += l.distill / micro_batches.size();
    r.compress += l.compress / micro_batches.size();
    r.frac += l.frac / micro_batches.size();
    r.tokens += l.counted_rows;
  }
  r.grad_norm = apply_gradients();
  return r;
}

DmsAdapter Trainer::adapter() const {
  if (config_.dms.mode != DmsMode::Adapter) fail(kWhere, "the student has no Mode B decision heads to save");
  at::NoGradGuard no_grad;
  const Weights w = forward_weights(/*detached=*/true, /*compute_dtype=*/false);
  DmsAdapter a{.config = config_.dms, .layers = {}};
  for (const auto& l : w.layers) a.layers.push_back(l.decision);
  return a;
}

}  // namespace dms
