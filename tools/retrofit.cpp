// dms retrofit: teaches a model DMS (dms-spec section 4) on a text corpus, with a checkpoint that
// --resume continues bit for bit, a JSONL log, held-out evaluation, and an adapter (or a whole
// Hugging Face directory) at the end.
#include <ATen/Parallel.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "commands.h"
#include "common.h"
#include "dms/model/device.h"
#include "dms/train/data.h"
#include "dms/train/distributed.h"
#include "dms/train/heldout_eval.h"
#include "dms/train/hf_export.h"
#include "dms/train/trainer.h"

namespace dms::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kCheckpointFormat = "dms-retrofit-checkpoint";

std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal.store(sig); }

// What defines a run: a resumed run must agree on all of it, or it would not continue the same
// loss curve. --steps, --checkpoint-every, --eval-every, --eval-rows, --threads and --device may
// change (a run resumed on another device continues the curve to rounding, not bit for bit).
struct RunSettings {
  nlohmann::json json;

  // Fields that differ between this run and `saved`, as "field (saved X, now Y)".
  std::vector<std::string> differences(const nlohmann::json& saved) const {
    std::vector<std::string> out;
    for (const auto& [key, value] : json.items())
      if (!saved.contains(key) || saved[key] != value)
        out.push_back(key + " (saved " + (saved.contains(key) ? saved[key].dump() : "none") + ", now " + value.dump() + ")");
    for (const auto& [key, value] : saved.items())
      if (!json.contains(key)) out.push_back(key + " (saved " + value.dump() + ", now none)");
    return out;
  }
};

std::string canonical(const std::string& path) {
  std::error_code ec;
  const fs::path p = fs::weakly_canonical(path, ec);
  return ec ? path : p.string();
}

void write_text_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) fail(tmp.string(), "write failed");
  }
  fs::rename(tmp, path);
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) fail(path.string(), "cannot read");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(path.string(), std::string("not valid JSON: ") + e.what());
  }
}

TrainBatch to_train_batch(const Batch& b) { return make_train_batch(b.tokens, b.segments, b.segments >= 0); }

// The log keeps what happened up to the checkpoint a run resumes from: step records of steps
// done before it, and evaluations taken at or before it.
void truncate_log(const fs::path& path, int64_t steps_done) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json r;
    try {
      r = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      continue;  // a line an interrupted write left unfinished
    }
    if (r.value("step", INT64_MAX) <= steps_done) kept += line + "\n";
  }
  write_text_atomically(path, kept);
}

class Log {
 public:
  Log(const fs::path& path) : path_(path), file_(std::fopen(path.c_str(), "ab")) {
    if (!file_) fail(path.string(), "cannot open for writing");
  }
  ~Log() { std::fclose(file_); }
  void write(const nlohmann::json& record) {
    const std::string line = record.dump() + "\n";
    if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
      fail(path_.string(), "write failed");
  }

 private:
  fs::path path_;
  FILE* file_;
};

struct Checkpoint {
  fs::path dir;

  fs::path index() const { return dir / "checkpoint.json"; }
  bool exists() const { return fs::exists(index()); }

  // The trainer state first, then the index that names it (the commit point), then older states
  // go: an interruption at any moment leaves the previous checkpoint or the new one whole.
  void save(const Trainer& trainer, const TrainingData& data, const RunSettings& run) const {
    fs::create_directories(dir);
    char name[64];
    std::snprintf(name, sizeof name, "state-%08lld.safetensors", static_cast<long long>(trainer.steps_done()));
    save_trainer_state((dir / name).string(), trainer.state());
    const nlohmann::json index = {{"format", kCheckpointFormat}, {"step", trainer.steps_done()}, {"state", name},
                                  {"data", data.cursor().to_json()}, {"run", run.json}};
    write_text_atomically(this->index(), index.dump(2) + "\n");
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string f = e.path().filename().string();
      if (f != name && f.starts_with("state-")) fs::remove(e.path());
    }
  }

  nlohmann::json load_index() const {
    nlohmann::json j = read_json(index());
    if (!j.is_object() || j.value("format", "") != kCheckpointFormat || !j.contains("state") || !j["state"].is_string() ||
        !j.contains("run") || !j.contains("data"))
      fail(index().string(), "is not a dms retrofit checkpoint");
    return j;
  }
};

at::ScalarType parse_dtype(const std::string& text) {
  if (text == "f32") return at::kFloat;
  if (text == "bf16") return at::kBFloat16;
  throw UsageError("--dtype: expected f32 or bf16, got '" + text + "'");
}

int64_t positive(const Args& args, const std::string& name, int64_t min = 1) {
  const int64_t v = args.integer(name);
  if (v < min) throw UsageError("--" + name + ": must be at least " + std::to_string(min));
  return v;
}

// --device resolved for this process (cuda: cuda:LOCAL_RANK under data parallel) and checked on
// every rank: a device only some ranks lack (cuda:LOCAL_RANK on a machine with fewer GPUs) stops
// them all, rather than leaving the others waiting in the first collective. GPU ranks then
// average through NCCL.
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
  if (dp && device.is_cuda() && !dp->use_nccl(device) && dp->rank() == 0)
    std::fprintf(stderr, "retrofit: this build has no NCCL; gradients go through host memory and Gloo\n");
  return device;
}

}  // namespace

int run_retrofit(int argc, char** argv) {
  Args args("retrofit", "--data FILE --steps N --out DIR [options]",
            "Retrofits a model with DMS decision heads (dms-spec section 4): the student, the model with\n"
            "decision heads evicting through the soft mask, learns to match the teacher, the model as\n"
            "given keeping every key, while the compression loss raises its eviction fraction along a\n"
            "linear schedule of the compression ratio from 1 to --target-cr over --ramp-steps steps.\n"
            "Data: plain text files or JSONL ({\"text\"} or {\"messages\"}, rendered with the chat\n"
            "template), packed into rows of --seq-len tokens. Writes DIR/log.jsonl (a record per step and\n"
            "per evaluation), DIR/checkpoint/ (every --checkpoint-every steps, at the end, and on Ctrl-C;\n"
            "--resume continues from it), and DIR/adapter.safetensors (load with `dms generate\n"
            "--dms-adapter`) or, with --train all, the Hugging Face directory DIR/model/.\n"
            "Data parallel: launched with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (as torchrun sets\n"
            "them), each process trains on its --batch rows of every micro-batch; rank 0 writes. On GPUs\n"
            "(--device cuda) gradients are averaged through NCCL, on the CPU through Gloo.");
  args.option("model", "PATH", "Hugging Face checkpoint directory or GGUF file", "the default model, SmolLM2-135M-Instruct")
      .option("dtype", "f32|bf16", "compute dtype (trained tensors keep fp32 masters)", "f32")
      .option("threads", "N", "CPU threads", "all cores")
      .option("device", "cpu|cuda|cuda:N", "where to train; cuda under data parallel: cuda:LOCAL_RANK", "cpu")
      .repeated("data", "PATH", "training data: .jsonl, plain text, or a directory of them (may be repeated)")
      .repeated("heldout", "PATH", "held-out data for evaluation (may be repeated); default: a share of --data")
      .option("heldout-fraction", "F", "share of the --data documents held out (by a stable hash)", "0.05 without --heldout")
      .option("out", "DIR", "output directory")
      .option("steps", "N", "optimizer steps in all (a resumed run counts the steps already done)")
      .option("train", "adapter|all", "train the Mode B decision heads only (base frozen) or every weight", "adapter")
      .option("dms-mode", "adapter|query-channel", "decision heads for --train all: Mode B or Mode A", "adapter")
      .option("target-cr", "R", "compression ratio the schedule ends at (eviction fraction 1 - 1/R)", "8")
      .option("dms-adapter", "PATH", "start from this adapter's decision heads and settings (e.g. to train on longer rows)")
      .option("window", "W", "DMS window: a flagged key stays visible to W more queries (with --dms-adapter: the adapter's)", "256")
      .option("ramp-steps", "N", "steps over which the ratio rises linearly from 1 to --target-cr", "half of --steps")
      .option("seq-len", "T", "tokens per training row", "1024")
      .option("batch", "B", "rows per micro-batch (per process)", "1")
      .option("accumulation", "N", "micro-batches per optimizer step", "1")
      .option("lr", "LR", "AdamW learning rate (betas 0.9, 0.95, no weight decay)", "3e-5")
      .option("max-grad-norm", "X", "clip the global gradient norm to X; 0: no clipping", "1")
      .option("tau", "T", "temperature of the relaxed decisions", "0.1")
      .option("alpha-scale", "S", "decision logit scale (with --dms-adapter: the adapter's)", "100")
      .option("alpha-offset", "O", "decision logit offset (with --dms-adapter: the adapter's)", "5")
      .option("alpha-per", "head|layer", "one decision per KV head or per layer (with --dms-adapter: the adapter's)", "head")
      .option("seed", "N", "seed of the data order and the decision noise", "0")
      .option("checkpoint-every", "K", "write DIR/checkpoint every K steps (and at the end)", "100")
      .option("eval-every", "K", "evaluate on held-out rows every K steps (and at the end); 0: only at the end", "0")
      .option("eval-rows", "N", "held-out rows per evaluation", "16")
      .flag("resume", "continue the run in DIR from its checkpoint");
  if (!args.parse(argc, argv)) return 0;

  // Usage first, before anything slow.
  if (args.all("data").empty()) throw UsageError("--data: at least one training data file is required");
  if (!args.has("out")) throw UsageError("--out: the output directory is required");
  if (!args.has("steps")) throw UsageError("--steps: the number of optimizer steps is required");
  const int64_t steps = positive(args, "steps");
  const TrainTarget target = as_usage([&] { return parse_train_target(args.str("train"), "--train"); });
  const std::string dms_mode = args.str("dms-mode");
  if (dms_mode != "adapter" && dms_mode != "query-channel")
    throw UsageError("--dms-mode: expected adapter or query-channel, got '" + dms_mode + "'");
  if (dms_mode == "query-channel" && target == TrainTarget::Adapter)
    throw UsageError("--dms-mode query-channel: Mode A has no adapter weights; use it with --train all");
  // With --dms-adapter, the decision settings not given here are the adapter's.
  const std::string init_adapter = args.has("dms-adapter") ? canonical(args.str("dms-adapter")) : "";
  if (!init_adapter.empty() && dms_mode == "query-channel")
    throw UsageError("--dms-adapter: an adapter holds Mode B heads; it cannot start a Mode A (query-channel) run");
  const auto setting = [&](const std::string& name) { return args.has(name) || init_adapter.empty(); };
  const double target_cr = args.number("target-cr");
  if (!(target_cr >= 1)) throw UsageError("--target-cr: must be at least 1 (got " + args.str("target-cr") + ")");
  const int64_t seq_len = positive(args, "seq-len", 2);
  const int64_t window = positive(args, "window");
  if (setting("window") && window >= seq_len - 1)
    throw UsageError("--window: a window of " + std::to_string(window) + " leaves nothing to evict in rows of " +
                     std::to_string(seq_len) + " tokens; it must be below --seq-len minus 1");
  const int64_t batch = positive(args, "batch"), accumulation = positive(args, "accumulation");
  const int64_t checkpoint_every = positive(args, "checkpoint-every");
  const int64_t eval_every = positive(args, "eval-every", 0), eval_rows = positive(args, "eval-rows");
  const double lr = args.number("lr"), tau = args.number("tau"), max_grad_norm = args.number("max-grad-norm");
  if (!(lr > 0)) throw UsageError("--lr: must be positive");
  if (!(tau > 0)) throw UsageError("--tau: must be positive");
  const std::string alpha_per = args.str("alpha-per");
  if (alpha_per != "head" && alpha_per != "layer") throw UsageError("--alpha-per: expected head or layer");
  // What a run records of a decision setting: its value, or null when it is the adapter's.
  const auto recorded = [&](const std::string& name, const nlohmann::json& value) {
    return setting(name) ? value : nlohmann::json(nullptr);
  };
  const int64_t seed = args.integer("seed");
  if (seed < 0) throw UsageError("--seed: must be >= 0");
  const at::ScalarType dtype = parse_dtype(args.str("dtype"));
  at::Device device = as_usage([&] { return parse_device(args.str("device"), "--device"); });
  if (args.has("heldout") && args.has("heldout-fraction"))
    throw UsageError("--heldout and --heldout-fraction: give one or the other");
  const double heldout_fraction = args.has("heldout") ? 0.0 : args.has("heldout-fraction") ? args.number("heldout-fraction") : 0.05;
  if (!(heldout_fraction >= 0 && heldout_fraction < 1)) throw UsageError("--heldout-fraction: must be in [0, 1)");
  if (args.has("threads")) {
    at::set_num_threads(static_cast<int>(positive(args, "threads")));
  } else {
    at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  }

  const fs::path out(args.str("out"));
  const Checkpoint checkpoint{out / "checkpoint"};
  const bool resume = args.has("resume");
  if (resume && !checkpoint.exists())
    throw UsageError("--resume: " + checkpoint.index().string() + " does not exist (no run to continue in " + out.string() + ")");
  if (!resume && checkpoint.exists())
    throw UsageError("--out: " + out.string() + " already holds a run (" + checkpoint.index().string() +
                     "); pass --resume to continue it, or choose another directory");
  nlohmann::json saved;
  if (resume) saved = checkpoint.load_index();
  int64_t ramp_steps = steps / 2;
  if (args.has("ramp-steps")) ramp_steps = positive(args, "ramp-steps", 0);
  else if (resume && saved["run"].contains("ramp_steps") && saved["run"]["ramp_steps"].is_number_integer())
    ramp_steps = saved["run"]["ramp_steps"].get<int64_t>();  // the run's own schedule, whatever --steps is now

  auto dp = DataParallel::from_env();
  const int rank = dp ? dp->rank() : 0, world = dp ? dp->world() : 1;
  const bool writer = rank == 0;
  device = this_process_device(device, dp.get());

  const std::string model_path = args.has("model") ? args.str("model") : default_model_path();
  std::vector<std::string> data_paths, heldout_paths;
  for (const auto& p : args.all("data")) data_paths.push_back(canonical(p));
  for (const auto& p : args.all("heldout")) heldout_paths.push_back(canonical(p));
  RunSettings run{{{"model", canonical(model_path)},
                   {"data", data_paths},
                   {"heldout", heldout_paths},
                   {"heldout_fraction", heldout_fraction},
                   {"train", train_target_name(target)},
                   {"dms_mode", dms_mode},
                   {"target_cr", target_cr},
                   {"window", recorded("window", window)},
                   {"ramp_steps", ramp_steps},
                   {"seq_len", seq_len},
                   {"batch", batch},
                   {"accumulation", accumulation},
                   {"world", world},
                   {"lr", lr},
                   {"max_grad_norm", max_grad_norm},
                   {"tau", tau},
                   {"alpha_scale", recorded("alpha-scale", args.number("alpha-scale"))},
                   {"alpha_offset", recorded("alpha-offset", args.number("alpha-offset"))},
                   {"alpha_per", recorded("alpha-per", alpha_per)},
                   {"dtype", args.str("dtype")},
                   {"seed", seed}}};
  if (!init_adapter.empty()) run.json["dms_adapter"] = init_adapter;  // absent otherwise, as in older runs
  if (resume) {
    const auto diff = run.differences(saved["run"]);
    if (!diff.empty()) {
      std::string text;
      for (const auto& d : diff) text += (text.empty() ? "" : "; ") + d;
      throw UsageError("--resume: these settings differ from the run in " + out.string() +
                       ", which would change its loss curve: " + text);
    }
  }

  Model model = load_model(model_path, dtype, {.adapter_path = init_adapter, .overrides = {}});
  if (target == TrainTarget::All && model.info.format == CheckpointFormat::Gguf)
    fail("--train all", model_path + " is a GGUF file: a retrofit of every weight is exported as a Hugging Face "
                                     "directory, which needs the base's config.json and tokenizer files; start from "
                                     "the Hugging Face checkpoint, or use --train adapter");

  DataOptions data_options;
  data_options.paths = args.all("data");
  data_options.heldout_paths = args.all("heldout");
  data_options.heldout_fraction = heldout_fraction;
  data_options.seq_len = seq_len;
  data_options.seed = static_cast<uint64_t>(seed);
  TrainingData data = TrainingData::load(data_options, *model.tokenizer, model.chat_template);
  if (writer) std::fprintf(stderr, "retrofit: %s\n", data.describe().c_str());

  TrainerOptions options;
  options.target = target;
  if (setting("window")) options.dms.window = window;
  if (setting("alpha-scale")) options.dms.alpha_scale = args.number("alpha-scale");
  if (setting("alpha-offset")) options.dms.alpha_offset = args.number("alpha-offset");
  if (setting("alpha-per")) options.dms.per_layer = alpha_per == "layer";
  options.dms.target_cr = target_cr;
  if (dms_mode == "query-channel") options.dms.mode = DmsMode::QueryChannel;
  options.tau = tau;
  options.schedule = {.start = 1.0, .end = target_cr, .ramp_steps = ramp_steps};
  options.adamw.lr = lr;
  options.max_grad_norm = max_grad_norm;
  options.accumulation = accumulation;
  options.seed = static_cast<uint64_t>(seed);
  options.device = device;
  if (dp) options.reduce_gradients = [&dp](const std::vector<at::Tensor>& t) { dp->average(t); };
  Trainer trainer(model, options);
  if (resume) {
    trainer.restore(load_trainer_state((checkpoint.dir / saved["state"].get<std::string>()).string()));
    data.restore(DataCursor::from_json(saved["data"], checkpoint.index().string()));
  }
  if (dp) dp->broadcast(trainer.trained());

  std::vector<TrainBatch> heldout;
  for (const Batch& b : data.heldout_batches(batch)) {
    if (static_cast<int64_t>(heldout.size()) * batch >= eval_rows) break;
    heldout.push_back(to_train_batch(b));
  }

  const fs::path log_path = out / "log.jsonl";
  std::unique_ptr<Log> log;
  if (writer) {
    fs::create_directories(out);
    if (resume) truncate_log(log_path, trainer.steps_done());
    else fs::remove(log_path);
    log = std::make_unique<Log>(log_path);
  }
  auto evaluate = [&]() -> std::optional<HeldoutResult> {
    if (heldout.empty() || !writer) return std::nullopt;
    const auto t0 = Clock::now();
    const HeldoutResult r = evaluate_heldout(trainer, heldout);
    log->write({{"type", "eval"}, {"step", trainer.steps_done()}, {"heldout_kl", r.kl}, {"heldout_frac", r.frac},
                {"tokens", r.tokens}});
    std::fprintf(stderr, "retrofit: eval at step %lld | held-out KL %.5f nats/token, eviction fraction %.3f (hard "
                         "decisions, %lld tokens, %.1f s)\n",
                 static_cast<long long>(trainer.steps_done()), r.kl, r.frac, static_cast<long long>(r.tokens),
                 std::chrono::duration<double>(Clock::now() - t0).count());
    return r;
  };

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  const int64_t first_step = trainer.steps_done();
  if (writer)
    std::fprintf(stderr, "retrofit: %s %s, %s on %s, window %lld, CR 1 -> %g over %lld steps, %lld steps%s%s\n",
                 train_target_name(target).c_str(), model_path.c_str(), args.str("dtype").c_str(), device.str().c_str(),
                 static_cast<long long>(trainer.student_config().dms.window), target_cr, static_cast<long long>(ramp_steps),
                 static_cast<long long>(steps),
                 first_step > 0 ? (", resuming after step " + std::to_string(first_step)).c_str() : "",
                 init_adapter.empty() ? "" : (", from the heads of " + init_adapter).c_str());
  const auto start = Clock::now();
  int64_t tokens_seen = 0;
  // A signal that reached any process stops every process after the same step.
  const auto stop_requested = [&dp] { return dp ? dp->any(g_signal.load() != 0) : g_signal.load() != 0; };
  bool stop = stop_requested();
  while (trainer.steps_done() < steps && !stop) {
    const auto t0 = Clock::now();
    std::vector<TrainBatch> micro;
    for (int64_t m = 0; m < accumulation; ++m) {
      TrainBatch b = to_train_batch(data.next_batch(batch, rank, world));
      b.first_sequence = (m * world + rank) * batch;
      micro.push_back(std::move(b));
    }
    StepResult r = trainer.step(micro);
    if (dp) {  // the log tells of the whole batch, not of rank 0's rows
      const std::vector<double> m = dp->mean({r.loss, r.distill, r.compress, r.frac});
      r.loss = m[0], r.distill = m[1], r.compress = m[2], r.frac = m[3];
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    tokens_seen += r.tokens * world;
    const int64_t done = trainer.steps_done();
    if (writer) {
      log->write({{"type", "step"}, {"step", done}, {"loss", r.loss}, {"distill", r.distill}, {"compress", r.compress},
                  {"frac", r.frac}, {"target_cr", r.target_cr}, {"target_frac", r.target_frac},
                  {"grad_norm", r.grad_norm}, {"tokens", r.tokens * world}, {"seconds", seconds}});
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      const double eta = elapsed / static_cast<double>(done - first_step) * static_cast<double>(steps - done);
      std::fprintf(stderr,
                   "step %lld/%lld | loss %.4f (distill %.4f, compress %.4f) | frac %.3f | CR %.2f (target %g) | "
                   "%.0f tok/s | %.2f s/step | ETA %s\n",
                   static_cast<long long>(done), static_cast<long long>(steps), r.loss, r.distill, r.compress, r.frac,
                   r.target_cr, target_cr, tokens_seen / elapsed, seconds, duration_text(eta).c_str());
    }
    if (eval_every > 0 && done % eval_every == 0 && done < steps) evaluate();
    if (writer && done % checkpoint_every == 0 && done < steps) checkpoint.save(trainer, data, run);
    stop = stop_requested();
  }

  if (stop) {
    if (writer) {
      checkpoint.save(trainer, data, run);
      std::fprintf(stderr,
                   "retrofit: interrupted after step %lld of %lld; checkpoint saved in %s\n"
                   "retrofit: continue with the same command plus --resume\n",
                   static_cast<long long>(trainer.steps_done()), static_cast<long long>(steps),
                   checkpoint.dir.c_str());
    }
    return 130;
  }
  if (!writer) return 0;
  checkpoint.save(trainer, data, run);
  const std::optional<HeldoutResult> final_eval = evaluate();

  std::string written;
  if (target == TrainTarget::All) {
    const fs::path dir = out / "model";
    export_hf_checkpoint(model_path, trainer.student_config(), trainer.student_weights(), dir.string());
    written = dir.string() + " (Hugging Face directory; run it with dms generate --model " + dir.string() + ")";
  } else {
    const fs::path path = out / "adapter.safetensors";
    save_dms_adapter(path.string(), model.transformer->config(), trainer.adapter());
    written = path.string() + " (use with dms generate --model " + model_path + " --dms-adapter " + path.string() + ")";
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  nlohmann::json summary = {{"type", "summary"}, {"step", trainer.steps_done()}, {"seconds", elapsed},
                            {"dms", trainer.student_config().dms.to_json()}};
  if (final_eval) {
    summary["heldout_kl"] = final_eval->kl;
    summary["heldout_frac"] = final_eval->frac;
  }
  log->write(summary);
  std::fprintf(stderr, "retrofit: done, %lld steps in %s", static_cast<long long>(trainer.steps_done()),
               duration_text(elapsed).c_str());
  if (final_eval)
    std::fprintf(stderr, " | held-out eviction fraction %.3f, KL %.5f nats/token", final_eval->frac, final_eval->kl);
  std::fprintf(stderr, "\nretrofit: wrote %s\nretrofit: log %s, checkpoint %s\n", written.c_str(), log_path.c_str(),
               checkpoint.dir.c_str());
  return 0;
}

}  // namespace dms::cli
