#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "common.h"
#include "commands.h"

namespace dms::cli {

int run_chat(int argc, char** argv) {
  Args args("chat", "[options]",
            "An interactive conversation: each line on standard input is a user turn, answered through the\n"
            "model's chat template. '/reset' starts over, '/exit' or end of input ends. The conversation\n"
            "stays in the KV cache's prefix cache between turns, so each turn processes only its new tokens.");
  add_model_options(args, ShippedAdapter::Apply);
  add_generation_options(args);
  add_cache_options(args);
  args.option("system", "TEXT", "system message (the template's default when absent)")
      .flag("stats", "print speed and KV cache size after each reply")
      .flag("no-prefix-cache", "run the whole conversation again each turn");
  if (!args.parse(argc, argv)) return 0;

  Model model = load_model_from_args(args, ShippedAdapter::Apply);
  GenerationParams params = generation_params_from_args(args, model);
  for (const auto& s : model.chat_template.stop_strings()) params.stop_strings.push_back(s);
  auto cache = make_cache_from_args(args, model, 1, model.info.config.max_position);
  EngineOptions eo;
  eo.prefix_cache = !args.has("no-prefix-cache");
  Engine engine(model, *cache, eo);

  std::vector<ChatMessage> messages;
  int64_t previous = -1;  // the last turn's request
  auto start = [&] {
    messages.clear();
    if (args.has("system")) messages.push_back({"system", args.str("system")});
    if (previous >= 0) engine.release(previous);
    previous = -1;
  };
  start();
  const bool interactive = isatty(STDIN_FILENO);
  std::string line;
  while (true) {
    if (interactive) std::fputs("> ", stdout), std::fflush(stdout);
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line == "/reset") {
      start();
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({"user", line});
    auto ids = model.tokenizer->encode(model.chat_template.render(messages, true), false);
    const int64_t id = engine.submit(ids, params, [](int64_t, const std::string& text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    });
    engine.run();
    if (previous >= 0) engine.release(previous);
    previous = id;
    const GenerationResult& r = engine.result(id);
    std::fputc('\n', stdout);
    messages.push_back({"assistant", r.text});
    ++params.sampling.seed;  // a fresh draw each turn, still reproducible from the first seed
    if (args.has("stats"))
      std::fprintf(stderr, "[prompt: %s | generation: %s | stopped: %s | KV %s, compression %.2f]\n",
                   rate(r.prompt_tokens, r.prompt_seconds).c_str(),
                   rate(static_cast<int64_t>(r.tokens.size()), r.generation_seconds).c_str(), r.stop_reason.c_str(),
                   human_bytes(static_cast<double>(r.cache.bytes_held)).c_str(), r.cache.compression_ratio);
  }
  return 0;
}

}  // namespace dms::cli
