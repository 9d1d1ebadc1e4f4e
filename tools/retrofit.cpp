// dms retrofit: teaches a model DMS (dms-spec section 4) on a text corpus. The run itself
// (checkpoints that --resume continues bit for bit, the JSONL log, held-out evaluation, data
// parallel, the adapter or Hugging Face directory at the end) is RetrofitRun in src/dms/train/;
// this file turns the options into RetrofitOptions and prints the run's progress.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <string>

#include "commands.h"
#include "common.h"
#include "dms/model/device.h"
#include "dms/train/retrofit_run.h"

namespace dms::cli {
namespace {

// The decision-head settings of fresh heads (a run from --dms-adapter takes the adapter's).
constexpr int64_t kFreshWindow = 256;
constexpr double kFreshAlphaScale = 100, kFreshAlphaOffset = 5;

void add_retrofit_options(Args& args) {
  add_model_options(args);
  args.option("device", "cpu|cuda|cuda:N", "where to train; cuda under data parallel: cuda:LOCAL_RANK", "cpu")
      .repeated("data", "PATH", "training data: .jsonl, plain text, or a directory of them (may be repeated)")
      .repeated("heldout", "PATH", "held-out data for evaluation (may be repeated); default: a share of --data")
      .option("heldout-fraction", "F", "share of the --data documents held out (by a stable hash)", "0.05 without --heldout")
      .option("out", "DIR", "output directory")
      .option("steps", "N", "optimizer steps in all (a resumed run counts the steps already done)")
      .option("train", "adapter|all", "train the Mode B decision heads only (base frozen) or every weight", "adapter")
      .option("dms-mode", "adapter|query-channel", "decision heads for --train all: Mode B or Mode A", "adapter")
      .option("target-cr", "R", "compression ratio the schedule ends at (eviction fraction 1 - 1/R)", "8")
      .option("start-cr", "R", "compression ratio the schedule starts at (e.g. an adapter's own, to go on from it)", "1")
      .option("ramp-steps", "N", "steps over which the ratio rises linearly from --start-cr to --target-cr", "half of --steps")
      .option("seq-len", "T", "tokens per training row", "1024")
      .option("batch", "B", "rows per micro-batch (per process)", "1")
      .option("accumulation", "N", "micro-batches per optimizer step", "1")
      .option("lr", "LR", "AdamW learning rate (betas 0.9, 0.95, no weight decay)", "3e-5")
      .option("max-grad-norm", "X", "clip the global gradient norm to X; 0: no clipping", "1")
      .option("tau", "T", "temperature of the relaxed decisions", "0.1")
      .option("attention-block", "N", "rows longer than N tokens attend block by block (flash style); 0: dense T x T scores", "256")
      .option("seed", "N", "seed of the data order and the decision noise", "0")
      .option("checkpoint-every", "K", "write DIR/checkpoint every K steps (and at the end)", "100")
      .option("eval-every", "K", "evaluate on held-out rows before the first step, every K steps and at the end; 0: only at the end", "0")
      .option("eval-rows", "N", "held-out rows per evaluation", "16")
      .flag("resume", "continue the run in DIR from its checkpoint");
}

// The options as a run, checked for what can be checked before anything slow.
RetrofitOptions retrofit_options(const Args& args) {
  if (args.all("data").empty()) throw UsageError("--data: at least one training data file is required");
  if (!args.has("out")) throw UsageError("--out: the output directory is required");
  if (!args.has("steps")) throw UsageError("--steps: the number of optimizer steps is required");
  if (args.has("no-eviction")) throw UsageError("--no-eviction: retrofitting trains the decision heads to evict");
  RetrofitOptions o;
  o.steps = args.at_least("steps", 1);
  o.target = as_usage([&] { return parse_train_target(args.str("train"), "--train"); });
  const std::string dms_mode = args.str("dms-mode");
  if (dms_mode != "adapter" && dms_mode != "query-channel")
    throw UsageError("--dms-mode: expected adapter or query-channel, got '" + dms_mode + "'");
  o.mode = dms_mode == "query-channel" ? DmsMode::QueryChannel : DmsMode::Adapter;
  if (o.mode == DmsMode::QueryChannel && o.target == TrainTarget::Adapter)
    throw UsageError("--dms-mode query-channel: Mode A has no adapter weights; use it with --train all");
  if (args.has("dms-adapter")) {
    if (o.mode == DmsMode::QueryChannel)
      throw UsageError("--dms-adapter: an adapter holds Mode B heads; it cannot start a Mode A (query-channel) run");
    o.adapter = args.str("dms-adapter");
  }
  o.target_cr = args.number("target-cr");
  if (!(o.target_cr >= 1)) throw UsageError("--target-cr: must be at least 1 (got " + args.str("target-cr") + ")");
  o.start_cr = args.number("start-cr");
  if (!(o.start_cr >= 1 && o.start_cr <= o.target_cr))
    throw UsageError("--start-cr: must be at least 1 and at most --target-cr (got " + args.str("start-cr") + ")");
  o.seq_len = args.at_least("seq-len", 2);
  // A decision setting not given is the adapter's, or for fresh heads the default.
  const bool fresh = o.adapter.empty();
  if (args.has("dms-window") || fresh) o.window = args.has("dms-window") ? args.at_least("dms-window", 1) : kFreshWindow;
  if (o.window && *o.window >= o.seq_len - 1)
    throw UsageError("--dms-window: a window of " + std::to_string(*o.window) + " leaves nothing to evict in rows of " +
                     std::to_string(o.seq_len) + " tokens; it must be below --seq-len minus 1");
  if (args.has("dms-scale") || fresh) o.alpha_scale = args.has("dms-scale") ? args.number("dms-scale") : kFreshAlphaScale;
  if (args.has("dms-offset") || fresh)
    o.alpha_offset = args.has("dms-offset") ? args.number("dms-offset") : kFreshAlphaOffset;
  if (args.has("dms-alpha-per") || fresh) {
    const std::string per = args.has("dms-alpha-per") ? args.str("dms-alpha-per") : "head";
    if (per != "head" && per != "layer") throw UsageError("--dms-alpha-per: expected head or layer, got '" + per + "'");
    o.per_layer = per == "layer";
  }
  if (args.has("ramp-steps")) o.ramp_steps = args.at_least("ramp-steps", 0);
  o.batch = args.at_least("batch", 1);
  o.accumulation = args.at_least("accumulation", 1);
  o.checkpoint_every = args.at_least("checkpoint-every", 1);
  o.eval_every = args.at_least("eval-every", 0);
  o.eval_rows = args.at_least("eval-rows", 1);
  o.lr = args.number("lr");
  o.tau = args.number("tau");
  o.attention_block = args.at_least("attention-block", 0);
  o.max_grad_norm = args.number("max-grad-norm");
  if (!(o.lr > 0)) throw UsageError("--lr: must be positive");
  if (!(o.tau > 0)) throw UsageError("--tau: must be positive");
  o.seed = static_cast<uint64_t>(args.at_least("seed", 0));
  o.dtype = dtype_from_args(args);
  o.device = as_usage([&] { return parse_device(args.str("device"), "--device"); });
  if (args.has("heldout") && args.has("heldout-fraction"))
    throw UsageError("--heldout and --heldout-fraction: give one or the other");
  o.heldout_fraction = args.has("heldout") ? 0.0 : args.has("heldout-fraction") ? args.number("heldout-fraction") : 0.05;
  if (!(o.heldout_fraction >= 0 && o.heldout_fraction < 1)) throw UsageError("--heldout-fraction: must be in [0, 1)");
  o.data = args.all("data");
  o.heldout = args.all("heldout");
  o.model = args.has("model") ? args.str("model") : default_model_path();
  o.out = args.str("out");
  o.resume = args.has("resume");
  return o;
}

void print_start(const RetrofitRun& run) {
  const RetrofitOptions& o = run.options();
  if (run.gradients_via_host())
    std::fprintf(stderr, "retrofit: this build has no NCCL; gradients go through host memory and Gloo\n");
  std::fprintf(stderr, "retrofit: %s\n", run.data().describe().c_str());
  const int64_t first = run.first_step();
  std::fprintf(stderr, "retrofit: %s %s, %s on %s, window %lld, CR %g -> %g over %lld steps, %lld steps%s%s\n",
               train_target_name(o.target).c_str(), o.model.c_str(), retrofit_dtype_name(o.dtype).c_str(),
               run.device().str().c_str(), static_cast<long long>(run.trainer().student_config().dms.window),
               o.start_cr, o.target_cr, static_cast<long long>(run.ramp_steps()), static_cast<long long>(o.steps),
               first > 0 ? (", resuming after step " + std::to_string(first)).c_str() : "",
               o.adapter.empty() ? "" : (", from the heads of " + o.adapter).c_str());
}

// The speed of the last steps (at least one evaluation interval, so an evaluation weighs as it
// will), not of the whole run: a run that was paused or slowed by other work recovers its ETA.
class RecentSpeed {
 public:
  explicit RecentSpeed(size_t steps) : steps_(steps) { ends_.push_back({Clock::now(), 0}); }
  void add(int64_t tokens) {
    ends_.push_back({Clock::now(), ends_.back().tokens + tokens});
    if (ends_.size() > steps_ + 1) ends_.pop_front();
  }
  double seconds() const { return std::chrono::duration<double>(ends_.back().time - ends_.front().time).count(); }
  double tokens_per_second() const { return static_cast<double>(ends_.back().tokens - ends_.front().tokens) / seconds(); }
  double seconds_per_step() const { return seconds() / static_cast<double>(ends_.size() - 1); }

 private:
  using Clock = std::chrono::steady_clock;
  struct End {
    Clock::time_point time;
    int64_t tokens;  // since the start
  };
  size_t steps_;
  std::deque<End> ends_;
};

void print_step(const RetrofitRun& run, const RetrofitStep& s, const RecentSpeed& speed) {
  const RetrofitOptions& o = run.options();
  const StepResult& r = s.result;
  const double eta = speed.seconds_per_step() * static_cast<double>(o.steps - s.done);
  std::fprintf(stderr,
               "step %lld/%lld | loss %.4f (distill %.4f, compress %.4f) | frac %.3f | CR %.2f (target %g) | "
               "%.0f tok/s | %.2f s/step | ETA %s\n",
               static_cast<long long>(s.done), static_cast<long long>(o.steps), r.loss, r.distill, r.compress, r.frac,
               r.target_cr, o.target_cr, speed.tokens_per_second(), s.seconds, duration_text(eta).c_str());
}

void print_eval(int64_t step, const HeldoutResult& r, double seconds) {
  std::fprintf(stderr, "retrofit: eval at step %lld | held-out KL %.5f nats/token, eviction fraction %.3f (hard "
                       "decisions, %lld tokens, %.1f s)\n",
               static_cast<long long>(step), r.kl, r.frac, static_cast<long long>(r.tokens), seconds);
}

}  // namespace

int run_retrofit(int argc, char** argv) {
  Args args("retrofit", "--data FILE --steps N --out DIR [options]",
            "Retrofits a model with DMS decision heads (dms-spec section 4): the student, the model with\n"
            "decision heads evicting through the soft mask, learns to match the teacher, the model as\n"
            "given keeping every key, while the compression loss raises its eviction fraction along a\n"
            "linear schedule of the compression ratio from --start-cr to --target-cr over --ramp-steps steps.\n"
            "Fresh heads start with --dms-window 256, --dms-scale 100, --dms-offset 5, --dms-alpha-per\n"
            "head; with --dms-adapter the run starts from that adapter's heads, and the settings not given\n"
            "are the adapter's. Trained tensors keep fp32 masters whatever --dtype.\n"
            "Data: plain text files or JSONL ({\"text\"} or {\"messages\"}, rendered with the chat\n"
            "template), packed into rows of --seq-len tokens. Writes DIR/log.jsonl (a record per step and\n"
            "per evaluation), DIR/checkpoint/ (every --checkpoint-every steps, at the end, and on Ctrl-C;\n"
            "--resume continues from it), and DIR/adapter.safetensors (load with `dms generate\n"
            "--dms-adapter`) or, with --train all, the Hugging Face directory DIR/model/.\n"
            "Data parallel: launched with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (as torchrun sets\n"
            "them), each process trains on its --batch rows of every micro-batch; rank 0 writes. On GPUs\n"
            "(--device cuda) gradients are averaged through NCCL, on the CPU through Gloo.");
  add_retrofit_options(args);
  if (!args.parse(argc, argv)) return 0;
  const RetrofitOptions options = retrofit_options(args);
  set_threads_from_args(args);

  try {
    RetrofitRun run(options);
    run.start();
    const int64_t resumed_at = run.steps_done();
    if (run.writer()) print_start(run);
    double start_eval_seconds = 0;
    if (const auto e = run.evaluate_start(start_eval_seconds)) print_eval(0, *e, start_eval_seconds);
    RecentSpeed speed(static_cast<size_t>(std::max<int64_t>(20, options.eval_every)));
    while (!run.finished() && !run.stop_requested()) {
      const RetrofitStep s = run.step();
      speed.add(s.tokens);
      if (!run.writer()) continue;
      print_step(run, s, speed);
      if (s.eval) print_eval(s.done, *s.eval, s.eval_seconds);
    }
    if (!run.finished()) {
      run.save_checkpoint();
      if (run.writer())
        std::fprintf(stderr,
                     "retrofit: interrupted after step %lld of %lld; checkpoint saved in %s\n"
                     "retrofit: continue with the same command plus --resume\n",
                     static_cast<long long>(run.steps_done()), static_cast<long long>(options.steps),
                     run.checkpoint_dir().c_str());
      return 130;
    }
    if (!run.writer()) return 0;
    const RetrofitResult done = run.finish();
    if (done.eval) print_eval(run.steps_done(), *done.eval, done.eval_seconds);
    const std::string how = options.target == TrainTarget::All
                                ? " (Hugging Face directory; run it with dms generate --model " + done.written + ")"
                                : " (use with dms generate --model " + options.model + " --dms-adapter " + done.written + ")";
    std::fprintf(stderr, "retrofit: done, %lld steps", static_cast<long long>(run.steps_done()));
    if (resumed_at > 0)  // the time is this process's: the steps before --resume ran elsewhere
      std::fprintf(stderr, " (%lld after --resume)", static_cast<long long>(run.steps_done() - resumed_at));
    std::fprintf(stderr, " in %s", duration_text(done.seconds).c_str());
    if (done.eval)
      std::fprintf(stderr, " | held-out eviction fraction %.3f, KL %.5f nats/token", done.eval->frac, done.eval->kl);
    std::fprintf(stderr, "\nretrofit: wrote %s%s\nretrofit: log %s, checkpoint %s\n", done.written.c_str(), how.c_str(),
                 done.log.c_str(), done.checkpoint.c_str());
    return 0;
  } catch (const RetrofitConflict& e) {
    throw UsageError("--" + e.setting + ": " + e.what());
  }
}

}  // namespace dms::cli
