#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "common.h"
#include "commands.h"
#include "dms/serve/engine_worker.h"
#include "dms/serve/http_server.h"

namespace dms::cli {
namespace {

// The compression the cache's policy aims at: what the start-up line sizes capacity with.
double expected_compression(const Args& args, const Model& model) {
  const std::string policy = policy_from_args(args, model);
  if (policy == "dms") {
    if (args.has("force-evict")) return 1.0 / std::max(1e-9, 1.0 - args.number("force-evict"));
    return model.info.config.dms.target_cr > 1 ? model.info.config.dms.target_cr : 1.0;
  }
  if (args.has("target-cr")) return args.number("target-cr");
  if (args.has("budget")) return static_cast<double>(model.info.config.max_position) / static_cast<double>(args.integer("budget"));
  return 1.0;
}

}  // namespace

int run_serve(int argc, char** argv) {
  Args args("serve", "[options]",
            "An OpenAI-compatible HTTP server: POST /v1/chat/completions and /v1/completions (streamed\n"
            "with \"stream\": true), GET /v1/models, /health, /metrics (Prometheus), POST /tokenize and\n"
            "/detokenize. One engine batches every request over the paged KV cache; requests enter as the\n"
            "cache's free blocks allow, so a policy that evicts serves more at once. SIGINT or SIGTERM\n"
            "stop it: new requests get 503, running ones have --shutdown-grace to finish, then exit 0.");
  add_model_options(args, ShippedAdapter::Apply);
  add_cache_options(args, "KV cache size: all requests' keys share it, e.g. 2GiB",
                    "room for 4 dense sequences of the context length");
  args.option("host", "ADDR", "address to listen on", "127.0.0.1")
      .option("port", "N", "port to listen on (0: any free port, printed at start)", "8080")
      .option("served-model-name", "NAME", "the model's name in the API", "the model file's name")
      .option("api-key", "KEY", "require 'Authorization: Bearer KEY' on /v1/*, /tokenize and /detokenize")
      .option("max-running", "N", "most sequences in the cache at once", "64")
      .option("max-queue", "N", "most sequences waiting for the cache; more get 503", "256")
      .option("step-tokens", "N", "most tokens in one forward (prefill chunk size)", "512")
      .flag("no-prefix-cache", "prefill every request's whole prompt (no reuse of earlier requests' keys)")
      .option("max-body", "BYTES", "largest request body; larger get 413", "4MiB")
      .option("timeout", "SECONDS", "how long a connection may wait to send its request or take the reply", "600")
      .option("shutdown-grace", "SECONDS", "after SIGINT/SIGTERM, how long running requests may go on", "10");
  if (!args.parse(argc, argv)) return 0;
  // SIGINT and SIGTERM are taken by sigwait below: blocked before any thread starts (the model's
  // loader starts the OpenMP pool), so that every thread inherits the mask and none dies of them.
  // A client gone mid-write must not kill the server either.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  serve::ServerOptions so;
  so.host = args.str("host");
  so.port = static_cast<int>(args.integer("port"));
  if (so.port < 0 || so.port > 65535) throw UsageError("--port: must be in [0, 65535]");
  if (args.has("api-key")) {
    so.api_key = args.str("api-key");
    if (so.api_key.empty()) throw UsageError("--api-key: must not be empty");
  }
  EngineOptions eo;
  eo.max_running = args.at_least("max-running", 1);
  eo.max_step_tokens = args.at_least("step-tokens", 1);
  eo.prefix_cache = !args.has("no-prefix-cache");
  const int64_t max_queue = args.at_least("max-queue", 0);
  so.max_body_bytes = parse_bytes(args.str("max-body"), "--max-body");
  so.timeout_s = args.number("timeout");
  if (!(so.timeout_s > 0)) throw UsageError("--timeout: must be > 0");
  so.max_n = std::min<int64_t>(16, eo.max_running + max_queue);
  // Each open connection holds an HTTP thread: one for every sequence that may run or wait.
  so.threads = static_cast<int>(std::min<int64_t>(eo.max_running + max_queue + 8, 1024));
  const double grace = args.number("shutdown-grace");
  if (grace < 0) throw UsageError("--shutdown-grace: must be >= 0");

  serve::check_port(so.host, so.port);  // before the load, which can take a while
  Model model = load_model_from_args(args, ShippedAdapter::Apply);
  const ModelConfig& c = model.info.config;
  auto cache = make_cache_from_args(args, model, 4, c.max_position);
  // The whole --kv-budget is taken now: a server's memory should not grow as traffic first
  // reaches the far blocks of its pools, and a budget the machine cannot back fails here.
  cache->make_resident();

  serve::ServedModel served;
  served.name = args.has("served-model-name") ? args.str("served-model-name")
                                                : std::filesystem::path(args.has("model") ? args.str("model")
                                                                                          : default_model_path())
                                                      .filename()
                                                      .string();
  served.tokenizer = model.tokenizer.get();
  served.chat_template = &model.chat_template;
  served.context_length = c.max_position;
  served.eos_ids = c.eos_ids;

  serve::ServeMetrics metrics;
  serve::EngineWorker worker(model, *cache, eo, max_queue, metrics);
  serve::HttpServer http(served, worker, metrics, so);
  const int port = http.bind();

  const CacheStats cs = cache->stats();
  const int64_t blocks = cs.pools.empty() ? 0 : cs.pools[0].blocks;
  const int64_t per_sequence = c.n_kv_heads * ((c.max_position + cache->options().block_size - 1) / cache->options().block_size);
  const double cr = expected_compression(args, model);
  std::fprintf(stderr,
               "KV cache: %s (%s) | sequences of %lld tokens: %lld fit dense, about %lld at %.1fx compression\n",
               human_bytes(static_cast<double>(cs.pool_bytes)).c_str(), describe_policy(args, model).c_str(),
               static_cast<long long>(c.max_position), static_cast<long long>(blocks / per_sequence),
               static_cast<long long>(static_cast<double>(blocks) * cr / static_cast<double>(per_sequence)), cr);
  std::fprintf(stderr, "serving '%s' on http://%s:%d (at most %lld running, %lld queued)\n", served.name.c_str(),
               so.host.c_str(), port, static_cast<long long>(eo.max_running), static_cast<long long>(max_queue));

  std::atomic<bool> stopping{false};
  std::thread listener([&] {
    http.run();
    if (!stopping) kill(getpid(), SIGTERM);  // run() returned on its own (the socket failed): shut down too
  });
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  stopping = true;
  std::fprintf(stderr, "serve: %s: refusing new requests, %s for running ones to finish\n", strsignal(signal_number),
               duration_text(grace).c_str());
  http.drain();
  worker.shutdown(std::chrono::milliseconds(static_cast<int64_t>(grace * 1000)));
  // Every request has its end now; let the streams write it before the sockets close.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (http.open_streams() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  http.stop();
  listener.join();
  std::fprintf(stderr, "serve: stopped\n");
  return 0;
}

}  // namespace dms::cli
