#include "dms/train/retrofit_run.h"

#include <filesystem>

#include "dms/model/device.h"
#include "dms/model/dms_adapter.h"
#include "dms/train/hf_export.h"
#include "dms/train/run_batches.h"

namespace dms {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string canonical(const std::string& path) {
  std::error_code ec;
  const fs::path p = fs::weakly_canonical(path, ec);
  return ec ? path : p.string();
}

std::vector<std::string> canonical(const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (const auto& p : paths) out.push_back(canonical(p));
  return out;
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The device of this process (cuda: cuda:LOCAL_RANK under data parallel), checked on every
// process: a device only some lack (cuda:LOCAL_RANK on a machine with fewer GPUs) stops them all,
// rather than leaving the others waiting in the first collective.
at::Device this_process_device(at::Device device, DataParallel* dp) {
  if (device.is_cuda() && !device.has_index()) device = at::Device(at::kCUDA, dp ? dp->local_rank() : 0);
  std::string missing;
  try {
    require_device(device, "--device");
  } catch (const Error& e) {
    missing = e.what();
  }
  if (dp && dp->any(!missing.empty()) && missing.empty())
    fail("--device", "another rank cannot use its device (this one has " + device.str() + ")");
  if (!missing.empty()) throw Error(missing);
  return device;
}

// What a run records of a decision setting: its value, or null when it is the adapter's (or the
// model's).
template <class T>
nlohmann::json recorded(const std::optional<T>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

}  // namespace

std::string retrofit_dtype_name(at::ScalarType dtype) {
  if (dtype == at::kFloat) return "f32";
  if (dtype == at::kBFloat16) return "bf16";
  fail("retrofit", std::string("compute dtype ") + c10::toString(dtype) + " is not f32 or bf16");
}

RunSettings retrofit_run_settings(const RetrofitOptions& o, int64_t ramp_steps, int world) {
  // The keys are those older builds recorded, so their runs resume (run_settings.h).
  RunSettings settings;
  settings.json = {{"model", canonical(o.model)},
                   {"data", canonical(o.data)},
                   {"heldout", canonical(o.heldout)},
                   {"heldout_fraction", o.heldout_fraction},
                   {"train", train_target_name(o.target)},
                   {"dms_mode", dms_mode_name(o.mode)},
                   {"target_cr", o.target_cr},
                   {"window", recorded(o.window)},
                   {"ramp_steps", ramp_steps},
                   {"seq_len", o.seq_len},
                   {"batch", o.batch},
                   {"accumulation", o.accumulation},
                   {"world", world},
                   {"lr", o.lr},
                   {"max_grad_norm", o.max_grad_norm},
                   {"tau", o.tau},
                   {"alpha_scale", recorded(o.alpha_scale)},
                   {"alpha_offset", recorded(o.alpha_offset)},
                   {"alpha_per", o.per_layer ? nlohmann::json(*o.per_layer ? "layer" : "head") : nlohmann::json(nullptr)},
                   {"dtype", retrofit_dtype_name(o.dtype)},
                   {"seed", o.seed}};
  if (!o.adapter.empty()) settings.json["dms_adapter"] = canonical(o.adapter);  // absent otherwise, as in older runs
  if (o.start_cr != 1) settings.json["start_cr"] = o.start_cr;                  // likewise
  return settings;
}

RetrofitRun::RetrofitRun(RetrofitOptions options)
    : options_(std::move(options)), checkpoint_(fs::path(options_.out) / "checkpoint") {
  if (!options_.adapter.empty()) options_.adapter = canonical(options_.adapter);
  retrofit_dtype_name(options_.dtype);  // refuses a dtype the run cannot record, before anything slow
  if (options_.resume && !checkpoint_.exists())
    throw RetrofitConflict("resume", checkpoint_.index().string() + " does not exist (no run to continue in " +
                                         options_.out + ")");
  if (!options_.resume && checkpoint_.exists())
    throw RetrofitConflict("out", options_.out + " already holds a run (" + checkpoint_.index().string() +
                                      "); pass --resume to continue it, or choose another directory");
  if (options_.resume) saved_ = checkpoint_.load();
  ramp_steps_ = options_.steps / 2;
  if (options_.ramp_steps) ramp_steps_ = *options_.ramp_steps;
  else if (saved_ && saved_->run.contains("ramp_steps") && saved_->run["ramp_steps"].is_number_integer())
    ramp_steps_ = saved_->run["ramp_steps"].get<int64_t>();  // the run's own schedule, whatever the steps are now
}

RetrofitRun::~RetrofitRun() = default;

void RetrofitRun::start() {
  const RetrofitOptions& o = options_;
  dp_ = DataParallel::from_env();
  device_ = this_process_device(o.device, dp_.get());
  via_host_ = dp_ && device_.is_cuda() && !dp_->use_nccl(device_);

  settings_ = retrofit_run_settings(o, ramp_steps_, world());
  if (saved_) {
    std::string text;
    for (const auto& d : settings_.differences(saved_->run)) text += (text.empty() ? "" : "; ") + d;
    if (!text.empty())
      throw RetrofitConflict("resume", "these settings differ from the run in " + o.out +
                                           ", which would change its loss curve: " + text);
  }

  model_ = std::make_unique<Model>(
      load_model(o.model, o.dtype, {.adapter_path = o.adapter, .overrides = {}}, WeightStorage::Float));
  if (o.target == TrainTarget::All && model_->info.format == CheckpointFormat::Gguf)
    fail("--train all", o.model + " is a GGUF file: a retrofit of every weight is exported as a Hugging Face "
                                  "directory, which needs the base's config.json and tokenizer files; start from "
                                  "the Hugging Face checkpoint, or use --train adapter");

  DataOptions data_options;
  data_options.paths = o.data;
  data_options.heldout_paths = o.heldout;
  data_options.heldout_fraction = o.heldout_fraction;
  data_options.seq_len = o.seq_len;
  data_options.seed = o.seed;
  data_ = std::make_unique<TrainingData>(TrainingData::load(data_options, *model_->tokenizer, model_->chat_template));

  TrainerOptions t;
  t.target = o.target;
  t.dms.window = o.window;
  t.dms.alpha_scale = o.alpha_scale;
  t.dms.alpha_offset = o.alpha_offset;
  t.dms.per_layer = o.per_layer;
  t.dms.target_cr = o.target_cr;
  if (o.mode == DmsMode::QueryChannel) t.dms.mode = DmsMode::QueryChannel;
  t.tau = o.tau;
  t.attention_block = o.attention_block;
  t.schedule = {.start = o.start_cr, .end = o.target_cr, .ramp_steps = ramp_steps_};
  t.adamw.lr = o.lr;
  t.max_grad_norm = o.max_grad_norm;
  t.accumulation = o.accumulation;
  t.seed = o.seed;
  t.device = device_;
  if (dp_) t.reduce_gradients = [this](const std::vector<at::Tensor>& trained) { dp_->average(trained); };
  trainer_ = std::make_unique<Trainer>(*model_, t);
  if (saved_) {
    trainer_->restore(load_trainer_state(saved_->state.string()));
    data_->restore(DataCursor::from_json(saved_->data, checkpoint_.index().string()));
  }
  if (dp_) dp_->broadcast(trainer_->trained());
  heldout_ = heldout_train_batches(*data_, o.batch, o.eval_rows);

  if (writer()) {
    fs::create_directories(o.out);
    const std::string log_path = (fs::path(o.out) / "log.jsonl").string();
    log_ = std::make_unique<RunLog>(saved_ ? RunLog::resumed(log_path, trainer_->steps_done()) : RunLog::fresh(log_path));
  }
  stop_ = std::make_unique<StopSignal>();
  first_step_ = trainer_->steps_done();
  started_ = Clock::now();
}

bool RetrofitRun::stop_requested() {
  const bool here = stop_->received();
  return dp_ ? dp_->any(here) : here;
}

RetrofitStep RetrofitRun::step() {
  const RetrofitOptions& o = options_;
  const auto t0 = Clock::now();
  RetrofitStep s;
  s.result = trainer_->step(next_step_batches(*data_, o.batch, o.accumulation, rank(), world()));
  StepResult& r = s.result;
  if (dp_) {  // the log tells of the whole batch, not of rank 0's rows
    const std::vector<double> m = dp_->mean({r.loss, r.distill, r.compress, r.frac});
    r.loss = m[0], r.distill = m[1], r.compress = m[2], r.frac = m[3];
  }
  s.seconds = seconds_since(t0);
  s.tokens = r.tokens * world();
  s.done = trainer_->steps_done();
  if (writer())
    log_->write({{"type", "step"}, {"step", s.done}, {"loss", r.loss}, {"distill", r.distill}, {"compress", r.compress},
                 {"frac", r.frac}, {"target_cr", r.target_cr}, {"target_frac", r.target_frac},
                 {"grad_norm", r.grad_norm}, {"tokens", s.tokens}, {"seconds", s.seconds}});
  if (o.eval_every > 0 && s.done % o.eval_every == 0 && s.done < o.steps) s.eval = evaluate(s.eval_seconds);
  if (s.done % o.checkpoint_every == 0 && s.done < o.steps) save_checkpoint();
  return s;
}

std::optional<HeldoutResult> RetrofitRun::evaluate_start(double& seconds) {
  if (options_.eval_every <= 0 || first_step_ > 0) return std::nullopt;
  return evaluate(seconds);
}

std::optional<HeldoutResult> RetrofitRun::evaluate(double& seconds) {
  if (heldout_.empty() || !writer()) return std::nullopt;
  const auto t0 = Clock::now();
  const HeldoutResult r = evaluate_heldout(*trainer_, heldout_);
  log_->write({{"type", "eval"}, {"step", trainer_->steps_done()}, {"heldout_kl", r.kl}, {"heldout_frac", r.frac},
               {"tokens", r.tokens}});
  seconds = seconds_since(t0);
  return r;
}

void RetrofitRun::save_checkpoint() {
  if (!writer()) return;
  checkpoint_.save(trainer_->state(), trainer_->steps_done(), data_->cursor().to_json(), settings_.json);
}

RetrofitResult RetrofitRun::finish() {
  if (!writer()) fail("retrofit", "only rank 0 finishes a run");
  save_checkpoint();
  RetrofitResult result;
  result.eval = evaluate(result.eval_seconds);
  if (options_.target == TrainTarget::All) {
    const fs::path dir = fs::path(options_.out) / "model";
    export_hf_checkpoint(options_.model, trainer_->student_config(), trainer_->student_weights(), dir.string());
    result.written = dir.string();
  } else {
    const fs::path path = fs::path(options_.out) / "adapter.safetensors";
    save_dms_adapter(path.string(), model_->transformer->config(), trainer_->adapter());
    result.written = path.string();
  }
  result.seconds = seconds_since(started_);
  nlohmann::json summary = {{"type", "summary"}, {"step", trainer_->steps_done()}, {"seconds", result.seconds},
                            {"dms", trainer_->student_config().dms.to_json()}};
  if (result.eval) {
    summary["heldout_kl"] = result.eval->kl;
    summary["heldout_frac"] = result.eval->frac;
  }
  log_->write(summary);
  result.log = log_->path();
  result.checkpoint = checkpoint_.dir().string();
  return result;
}

}  // namespace dms
