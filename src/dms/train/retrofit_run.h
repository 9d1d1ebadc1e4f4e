// A whole retrofit run (what `dms retrofit` does) as an object its caller drives and reports on:
// the settings checked against the output directory, data parallel, the model, data and trainer,
// checkpoints, the log and held-out evaluations of the step loop, stopping on a signal, and the
// adapter (or Hugging Face directory) at the end. It prints nothing.
//
//   RetrofitRun run(options);     // cheap checks first: RetrofitConflict before anything slow
//   run.start();                  // joins the other processes, loads, restores, opens the log
//   while (!run.finished() && !run.stop_requested()) report(run.step());
//   if (!run.finished()) { run.save_checkpoint(); return; }   // stopped: resume it later
//   if (run.writer()) report(run.finish());
//
// DIR (options.out) gets checkpoint/ (RunCheckpoint: every checkpoint_every steps, at the end and
// when stopped), log.jsonl (RunLog), and adapter.safetensors or, training every weight, model/ (a
// Hugging Face directory). Under data parallel (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, as
// torchrun sets them) every process trains its share of each step; only rank 0, the writer,
// writes, evaluates and finishes.
#pragma once
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dms/model/loader.h"
#include "dms/train/data.h"
#include "dms/train/distributed.h"
#include "dms/train/heldout_eval.h"
#include "dms/train/run_checkpoint.h"
#include "dms/train/run_log.h"
#include "dms/train/run_settings.h"
#include "dms/train/stop_signal.h"
#include "dms/train/trainer.h"
#include "dms/util/error.h"

namespace dms {

struct RetrofitOptions {
  std::string model;                      // Hugging Face directory or GGUF file
  at::ScalarType dtype = at::kFloat;      // compute dtype: f32 or bf16 (trained tensors keep fp32 masters)
  std::vector<std::string> data;          // training data (data_documents.h formats)
  std::vector<std::string> heldout;       // held-out data; empty: heldout_fraction of `data`
  double heldout_fraction = 0.05;
  TrainTarget target = TrainTarget::Adapter;
  DmsMode mode = DmsMode::Adapter;        // or QueryChannel (Mode A, TrainTarget::All only)
  std::string adapter;                    // start from this adapter's heads and settings; empty: fresh heads
  // Decision-head settings; unset: the adapter's, or the model's own.
  std::optional<int64_t> window;
  std::optional<double> alpha_scale, alpha_offset;
  std::optional<bool> per_layer;
  double target_cr = 8;                   // the compression ratio the schedule ends at
  double start_cr = 1;                    // and starts at
  std::optional<int64_t> ramp_steps;      // unset: a resumed run's own, else steps / 2
  int64_t steps = 1;                      // in all, counting those a resumed run has done
  int64_t seq_len = 1024, batch = 1, accumulation = 1;  // batch: rows per micro-batch per process
  double lr = 3e-5, max_grad_norm = 1, tau = 0.1;
  int64_t attention_block = 256;          // TrainerOptions::attention_block (speed only, not saved)
  uint64_t seed = 0;
  int64_t checkpoint_every = 100;
  int64_t eval_every = 0;                 // 0: only at the end
  int64_t eval_rows = 16;
  at::Device device = at::kCPU;           // cuda under data parallel: cuda:LOCAL_RANK
  std::string out;                        // the run's directory
  bool resume = false;                    // continue the run in `out` from its checkpoint
};

// The options do not fit the output directory: no run to resume, a run already there, or
// settings that differ from the saved run's. `setting` names the RetrofitOptions field at fault
// ("resume" or "out").
struct RetrofitConflict : Error {
  RetrofitConflict(std::string setting, const std::string& what) : Error(what), setting(std::move(setting)) {}
  std::string setting;
};

// What one optimizer step did; losses are means over every process's rows.
struct RetrofitStep {
  StepResult result;
  int64_t done = 0;        // steps done, this one included
  int64_t tokens = 0;      // counted rows of the step, all processes
  double seconds = 0;      // the step's wall time
  std::optional<HeldoutResult> eval;  // the evaluation taken after it, when one was due (writer only)
  double eval_seconds = 0;
};

// What finish() wrote.
struct RetrofitResult {
  std::string written;     // adapter.safetensors, or the model/ directory
  std::string log, checkpoint;
  std::optional<HeldoutResult> eval;  // the final evaluation (none without held-out rows)
  double eval_seconds = 0;
  double seconds = 0;                 // since start() returned
};

class RetrofitRun {
 public:
  // Checks the output directory: throws RetrofitConflict when resuming finds no checkpoint or a
  // new run finds one, and Error for a checkpoint that cannot be read. Nothing is loaded yet.
  explicit RetrofitRun(RetrofitOptions options);
  ~RetrofitRun();

  // Joins data parallel (DataParallel::from_env), resolves and checks the device on every
  // process, checks the settings against a resumed run's (RetrofitConflict listing each
  // difference), loads the model, data and trainer, restores the checkpoint, opens the log and
  // starts catching SIGINT and SIGTERM.
  void start();

  int rank() const { return dp_ ? dp_->rank() : 0; }
  int world() const { return dp_ ? dp_->world() : 1; }
  bool writer() const { return rank() == 0; }
  // Under data parallel on GPUs, whether gradients go through host memory and Gloo (a build
  // without NCCL).
  bool gradients_via_host() const { return via_host_; }
  const at::Device& device() const { return device_; }
  const RetrofitOptions& options() const { return options_; }
  int64_t ramp_steps() const { return ramp_steps_; }
  const RunSettings& settings() const { return settings_; }
  const TrainingData& data() const { return *data_; }
  const Trainer& trainer() const { return *trainer_; }
  std::string checkpoint_dir() const { return checkpoint_.dir().string(); }
  int64_t first_step() const { return first_step_; }  // steps done when start() returned
  int64_t steps_done() const { return trainer_->steps_done(); }
  bool finished() const { return steps_done() >= options_.steps; }

  // Whether SIGINT or SIGTERM reached any process; every process gets the same answer, so all
  // stop after the same step. Every process must call it equally often.
  bool stop_requested();
  // The held-out evaluation of the heads a fresh run starts from (step 0), logged like the
  // others, so the curve has its start; none for a resumed run, without held-out rows, without
  // --eval-every, or on ranks other than 0.
  std::optional<HeldoutResult> evaluate_start(double& seconds);
  // One optimizer step; rank 0 logs it, then evaluates and checkpoints when due (not after the
  // last step: finish() does).
  RetrofitStep step();
  // Writes the checkpoint (rank 0; nothing elsewhere), e.g. after a stop.
  void save_checkpoint();
  // After the last step, rank 0 only: the checkpoint, the final evaluation, the adapter or the
  // Hugging Face directory, the summary record. Throws Error on other ranks.
  RetrofitResult finish();

 private:
  std::optional<HeldoutResult> evaluate(double& seconds);

  RetrofitOptions options_;
  RunCheckpoint checkpoint_;
  std::optional<SavedCheckpoint> saved_;
  int64_t ramp_steps_ = 0;
  std::unique_ptr<DataParallel> dp_;
  at::Device device_ = at::kCPU;
  bool via_host_ = false;
  RunSettings settings_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<TrainingData> data_;
  std::unique_ptr<Trainer> trainer_;
  std::vector<TrainBatch> heldout_;
  std::unique_ptr<RunLog> log_;
  std::unique_ptr<StopSignal> stop_;
  int64_t first_step_ = 0;
  std::chrono::steady_clock::time_point started_;
};

// What a run with `options` records of itself (run_settings.h), given the ramp it resolved and the
// number of processes.
RunSettings retrofit_run_settings(const RetrofitOptions& options, int64_t ramp_steps, int world);

// The name a run records for its compute dtype: "f32", "bf16".
std::string retrofit_dtype_name(at::ScalarType dtype);

}  // namespace dms
