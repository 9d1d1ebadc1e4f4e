#include <cstdio>
#include <iostream>
#include <iterator>
#include <sstream>

#include "common.h"
#include "commands.h"
#include "kv_map.h"

namespace dms::cli {
namespace {

std::vector<std::string> read_prompts(const Args& args) {
  std::string text;
  if (args.positional().empty() || args.positional()[0] == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    text = args.positional()[0];
  }
  std::vector<std::string> prompts;
  if (args.has("lines")) {
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) prompts.push_back(line);
  } else if (!text.empty()) {
    prompts.push_back(text);
  }
  if (prompts.empty()) throw UsageError("the prompt is empty");
  return prompts;
}

}  // namespace

int run_generate(int argc, char** argv) {
  Args args("generate", "[options] [PROMPT]",
            "Continues PROMPT (read from standard input when absent or '-'), streaming the text to standard\n"
            "output; speed and KV cache memory go to standard error at the end. With --parallel N, N\n"
            "sequences are decoded together: N samples of the prompt (seeds SEED .. SEED+N-1; the prompt\n"
            "is prefilled once and its KV blocks shared), or with --lines one sequence per input line (N\n"
            "at a time), each printed when it ends.");
  add_model_options(args, ShippedAdapter::Apply);
  add_generation_options(args);
  add_cache_options(args);
  args.flag("chat", "send each prompt as a user message through the model's chat template")
      .option("system", "TEXT", "system message, with --chat")
      .option("parallel", "N", "sequences decoded together", "1")
      .flag("no-fork", "N samples each prefill the prompt and hold its keys on their own")
      .flag("lines", "one prompt per input line")
      .option("step-tokens", "N", "most tokens in one forward (prefill chunk size)", "512")
      .option("kv-map", "FILE.png", "draw which tokens each layer and KV head kept (first sequence)")
      .positionals(1);
  if (!args.parse(argc, argv)) return 0;
  if (args.has("system") && !args.has("chat")) throw UsageError("--system: only meaningful with --chat");
  const int64_t parallel = args.integer("parallel");
  if (parallel < 1) throw UsageError("--parallel: must be at least 1");
  const std::vector<std::string> texts = read_prompts(args);

  Model model = load_model_from_args(args, ShippedAdapter::Apply);
  GenerationParams params = generation_params_from_args(args, model);
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& text : texts) {
    if (args.has("chat")) {
      std::vector<ChatMessage> messages;
      if (args.has("system")) messages.push_back({"system", args.str("system")});
      messages.push_back({"user", text});
      // The rendered template carries its own BOS text where the family has one.
      prompts.push_back(model.tokenizer->encode(model.chat_template.render(messages, true), false));
    } else {
      prompts.push_back(model.tokenizer->encode(text, model.tokenizer->add_bos_default()));
    }
  }
  if (args.has("chat"))
    for (const auto& s : model.chat_template.stop_strings()) params.stop_strings.push_back(s);
  // N samples of one prompt: each with its own seed.
  const int64_t n_requests = args.has("lines") ? static_cast<int64_t>(prompts.size()) : parallel;
  size_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, p.size());

  auto cache = make_cache_from_args(args, model, std::min(parallel, n_requests),
                                    static_cast<int64_t>(longest) + params.max_tokens);
  EngineOptions eo;
  eo.max_running = parallel;
  eo.max_step_tokens = args.integer("step-tokens");
  if (eo.max_step_tokens < 1) throw UsageError("--step-tokens: must be at least 1");
  Engine engine(model, *cache, eo);
  const bool stream = n_requests == 1;
  Engine::TextCallback on_text;
  if (stream)
    on_text = [](int64_t, const std::string& text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    };
  std::vector<GenerationParams> per_request;
  for (int64_t i = 0; i < n_requests; ++i) {
    GenerationParams p = params;
    p.sampling.seed = params.sampling.seed + static_cast<uint64_t>(i);
    p.record_kept = i == 0 && args.has("kv-map");
    per_request.push_back(p);
  }
  std::vector<int64_t> ids;
  if (!args.has("lines") && !args.has("no-fork")) {
    ids = engine.submit_samples(prompts[0], per_request, on_text);
  } else {
    for (int64_t i = 0; i < n_requests; ++i)
      ids.push_back(engine.submit(prompts[args.has("lines") ? static_cast<size_t>(i) : 0], per_request[i], on_text));
  }
  size_t printed = 0;
  while (!engine.idle()) {
    engine.step();
    // Batched output: whole texts, in request order, as soon as each and those before it end.
    while (!stream && printed < ids.size() && engine.result(ids[printed]).finished) {
      std::printf("=== %zu ===\n%s\n", printed, engine.result(ids[printed]).text.c_str());
      std::fflush(stdout);
      ++printed;
    }
  }
  if (stream) std::fputc('\n', stdout);

  const GenerationResult& first = engine.result(ids[0]);
  const EngineStats& es = engine.stats();
  double cr = 0, evicted = 0, prompt_s = 0;
  int64_t prompt_tokens = 0;
  for (int64_t id : ids) {
    const GenerationResult& r = engine.result(id);
    cr += r.cache.compression_ratio / static_cast<double>(ids.size());
    evicted += r.cache.eviction_fraction / static_cast<double>(ids.size());
    prompt_tokens += r.prompt_tokens;
    prompt_s = std::max(prompt_s, r.prompt_seconds);
  }
  std::fprintf(stderr, "\n");
  if (stream)
    std::fprintf(stderr, "prompt: %s | generation: %s | stopped: %s | seed %llu\n",
                 rate(first.prompt_tokens, first.prompt_seconds).c_str(),
                 rate(static_cast<int64_t>(first.tokens.size()), first.generation_seconds).c_str(),
                 first.stop_reason.c_str(), static_cast<unsigned long long>(params.sampling.seed));
  else
    std::fprintf(stderr, "%zu sequences, %d at a time: %s in %lld steps | %lld tokens generated, %.1f tok/s | seed %llu\n",
                 ids.size(), static_cast<int>(parallel), rate(es.tokens_run, es.seconds).c_str(),
                 static_cast<long long>(es.steps), static_cast<long long>(es.generated_tokens),
                 es.seconds > 0 ? es.generated_tokens / es.seconds : 0.0,
                 static_cast<unsigned long long>(params.sampling.seed));
  std::fprintf(stderr, "KV cache (%s): peak %s held vs %s dense (%.2fx less) | compression ratio %.2f | eviction fraction %.3f%s\n",
               describe_policy(args, model).c_str(), human_bytes(static_cast<double>(es.peak_bytes_held)).c_str(),
               human_bytes(static_cast<double>(es.peak_dense_bytes)).c_str(),
               es.peak_bytes_held > 0 ? static_cast<double>(es.peak_dense_bytes) / static_cast<double>(es.peak_bytes_held) : 1.0,
               cr, evicted, es.preemptions ? (" | preemptions " + std::to_string(es.preemptions)).c_str() : "");
  if (!stream && !args.has("lines") && !args.has("no-fork")) {  // forked samples start decoding together
    double span = 0;
    int64_t decoded = 0;
    for (int64_t id : ids) {
      const GenerationResult& r = engine.result(id);
      span = std::max(span, r.generation_seconds);
      decoded += std::max<int64_t>(static_cast<int64_t>(r.tokens.size()) - 1, 0);
    }
    std::fprintf(stderr, "prompt: %s | decode after the first token: %s, all sequences together\n",
                 rate(prompt_tokens, prompt_s).c_str(), rate(decoded, span).c_str());
  }
  if (es.peak_shared_bytes_saved > 0)
    std::fprintf(stderr, "shared blocks: up to %s held once instead of once per sequence\n",
                 human_bytes(static_cast<double>(es.peak_shared_bytes_saved)).c_str());
  if (args.has("kv-map")) {
    KvMapInput in;
    in.kept = first.kept_positions;
    in.layers = model.info.config.n_layers;
    in.kv_heads = model.info.config.n_kv_heads;
    in.tokens = first.cache.tokens_seen;
    in.prompt_tokens = static_cast<int64_t>(prompts[0].size());
    in.title = "KV map: " + describe_policy(args, model);
    write_kv_map(args.str("kv-map"), in);
    std::fprintf(stderr, "kv map: %s\n", args.str("kv-map").c_str());
  }
  return 0;
}

}  // namespace dms::cli
