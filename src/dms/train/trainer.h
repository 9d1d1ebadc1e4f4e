// Retrofitting a model with DMS (dms-spec section 4): the student is the model with decision
// heads, trained through the training forward (TrainingAttention: dense attention plus the soft
// DMS mask) to match the teacher, the model as given with eviction disabled, while the
// compression loss pushes its eviction fraction up to the schedule's target.
//
// A run loop drives it like this:
//
//   Model model = load_model(path, at::kBFloat16);
//   TrainerOptions o;                        // adapter only, AdamW 3e-5 (0.9, 0.95), clip 1.0
//   o.dms.window = 256;
//   o.schedule = {.start = 1, .end = 8, .ramp_steps = 500};
//   Trainer trainer(model, o);
//   for (...) {
//     StepResult r = trainer.step(micro_batches);   // o.accumulation batches of B sequences
//     print(r.step, r.loss, r.distill, r.compress, r.frac, r.target_cr, ...);
//     if (checkpoint due) save_trainer_state(dir + "/state.safetensors", trainer.state());
//   }
//   save_dms_adapter(dir + "/adapter.safetensors", model.transformer->config(), trainer.adapter());
//
//   resume:    trainer.restore(load_trainer_state(dir + "/state.safetensors"));
//   parallel:  o.reduce_gradients averages the trained tensors' gradients across processes,
//              and each process sets TrainBatch::first_sequence to its sequences' index in the
//              step ((micro * world + rank) * B), so the noise does not depend on the split.
//   teacher:   teacher_log_probs(batch) once, then accumulate(batch, it) (e.g. to reuse it).
//
// What is trained: TrainTarget::Adapter, the Mode B decision heads only (a model without
// decision heads gets them, initialised as dms-spec section 1 says: projection 0, so every
// logit starts at -offset and nothing is evicted; norm weight 1), the base frozen; or
// TrainTarget::All, every weight, in Mode A or Mode B. Compute runs in the weights' dtype
// (f32 or bf16; f64 for tests); trained tensors keep an fp32 master copy under bf16 so small
// updates are not rounded away.
//
// Determinism: the decision noise is keyed by (seed, step, sequence, layer) (StepNoise), so a
// run is a function of its seed, data and options, and restore() continues it bit for bit.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dms/model/config.h"
#include "dms/model/dms_adapter.h"
#include "dms/model/loader.h"
#include "dms/model/transformer.h"
#include "dms/model/weights.h"
#include "dms/train/losses.h"
#include "dms/train/optimizer.h"
#include "dms/train/train_batch.h"

namespace dms {

enum class TrainTarget { Adapter, All };
std::string train_target_name(TrainTarget target);  // "adapter", "all"
// Throws Error naming `where` for anything but train_target_name's words.
TrainTarget parse_train_target(const std::string& name, const std::string& where);

struct TrainerOptions {
  TrainTarget target = TrainTarget::Adapter;
  // Applied over the model's DMS settings (window, scale, offset, per layer, mode). A model
  // without decision heads is given Mode B heads unless mode asks for Mode A (TrainTarget::All
  // only). The student always evicts (eviction_disabled is ignored).
  DmsOverrides dms;
  double tau = 0.1;                 // temperature of the relaxed decisions
  // Rows longer than this attend block by block (TrainingAttentionOptions::block); 0: dense T x T.
  int64_t attention_block = 256;
  CompressionSchedule schedule;     // CR(step): the target eviction fraction is 1 - 1/CR
  AdamWOptions adamw;
  double max_grad_norm = 1.0;       // global gradient-norm clip; <= 0: none
  int64_t accumulation = 1;         // micro-batches per optimizer step
  uint64_t seed = 0;                // keys the decision noise
  // Where the student, the teacher and the optimizer live (the weights are copied there).
  // Batches may be given on any device. The decision noise is drawn on the CPU, so a seed
  // gives the same noise on every device.
  at::Device device = at::kCPU;
  // Data parallel: called with the trained tensors once every micro-batch of a step has been
  // accumulated, before clipping; averages their .grad() across processes in place.
  std::function<void(const std::vector<at::Tensor>& trained)> reduce_gradients;
};

// One micro-batch's losses (dms-spec section 4), as plain numbers.
struct StepLosses {
  double loss = 0, distill = 0, compress = 0;
  double frac = 0;            // eviction fraction of the student's hard decisions
  int64_t counted_rows = 0;   // non-padding rows
};

// One optimizer step: the means of its micro-batches' losses, and what the step aimed at.
struct StepResult {
  int64_t step = 0;           // 0 for the first step
  double loss = 0, distill = 0, compress = 0, frac = 0;
  double target_cr = 1;       // CR(step)
  double target_frac = 0;     // 1 - 1 / CR(step)
  double grad_norm = 0;       // global norm before clipping
  int64_t tokens = 0;         // counted rows of all micro-batches
};

// Everything a resumed run needs: the trained tensors, the AdamW moments, the step and the
// seed. The tensors are named "weight/<name>", "exp_avg/<name>", "exp_avg_sq/<name>" with
// Hugging Face names.
struct TrainerState {
  std::map<std::string, at::Tensor> tensors;
  nlohmann::json meta;    // step, seed, target, the student's dms config, options (informational)
  std::string source = "trainer state";  // the file it was read from, for errors
};

// Writes `state` atomically as one safetensors file (metadata format "dms-trainer-state").
void save_trainer_state(const std::string& path, const TrainerState& state);
// Throws Error naming `path` for a file that is not a trainer state.
TrainerState load_trainer_state(const std::string& path);

class Trainer {
 public:
  // Throws Error for bad options: a ratio below 1, Mode A with TrainTarget::Adapter, ...
  Trainer(const ModelConfig& config, const Weights& weights, const TrainerOptions& options);
  Trainer(const Model& model, const TrainerOptions& options);

  // The teacher's log-probabilities [B*T, V] (fp32; fp64 for fp64 weights), without autograd.
  at::Tensor teacher_log_probs(const TrainBatch& batch) const;

  // Forward and backward of one micro-batch; gradients accumulate, scaled by 1/accumulation.
  // `teacher` from teacher_log_probs, or undefined to compute it here. Throws Error for a bad
  // batch or a window that leaves nothing to evict in it.
  StepLosses accumulate(const TrainBatch& batch, const at::Tensor& teacher = {});
  // After `accumulation` micro-batches: reduce_gradients, clipping, the AdamW update; the step
  // count advances. Returns the gradient norm before clipping.
  double apply_gradients();
  // accumulate() every micro-batch (exactly `accumulation` of them), then apply_gradients().
  StepResult step(const std::vector<TrainBatch>& micro_batches);
  StepResult step(const TrainBatch& batch) { return step(std::vector<TrainBatch>{batch}); }

  int64_t steps_done() const { return step_; }
  const at::Device& device() const { return options_.device; }
  const ModelConfig& student_config() const { return config_; }
  // The trained tensors (leaves whose .grad() the micro-batches fill), with their names.
  const std::vector<std::string>& trained_names() const { return names_; }
  const std::vector<at::Tensor>& trained() const { return masters_; }
  // The student's weights now, in the compute dtype, detached (for evaluation or export).
  Weights student_weights() const;
  Transformer student() const { return Transformer(config_, student_weights()); }
  // The student's Mode B decision heads (at master precision, on the trainer's device) and
  // settings; throws Error in Mode A.
  DmsAdapter adapter() const;

  // Only between steps (no micro-batch accumulated).
  TrainerState state() const;
  // Throws Error naming state.source when the state's tensors are not this trainer's.
  void restore(const TrainerState& state);

 private:
  // The student's weights with the trained tensors substituted: differentiable unless
  // `detached`; in the compute dtype, or at master precision (for export).
  Weights forward_weights(bool detached, bool compute_dtype) const;
  // teacher_log_probs of a batch already validated and on the trainer's device.
  at::Tensor teacher_forward(const TrainBatch& batch) const;

  ModelConfig config_;          // the student
  Weights weights_;             // the student's frozen tensors (trained ones are substituted)
  std::unique_ptr<Transformer> teacher_;
  TrainerOptions options_;
  uint64_t seed_;
  std::vector<std::string> names_;
  std::vector<size_t> slots_;   // index of each trained tensor in named_weights(weights)
  std::vector<at::Tensor> masters_;
  bool tied_ = false;           // lm_head aliases the embedding
  std::unique_ptr<AdamW> optimizer_;
  int64_t step_ = 0;
  int64_t micro_ = 0;           // micro-batches accumulated in the current step
  int64_t sequences_ = 0;       // sequences accumulated in the current step
};

}  // namespace dms
