#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "common.h"
#include "commands.h"

namespace dms::cli {

int run_chat(int argc, char** argv) {
  Args args("chat", "[options]",
            "An interactive conversation: each line on standard input is a user turn, answered through the\n"
            "model's chat template. '/reset' starts over, '/exit' or end of input ends. The KV cache is kept\n"
            "between turns, so only new tokens are processed.");
  add_model_options(args);
  add_generation_options(args);
  args.option("system", "TEXT", "system message (the template's default when absent)").flag("stats", "print speed after each reply");
  if (!args.parse(argc, argv)) return 0;

  Model model = load_model_from_args(args);
  GenerationParams params = generation_params_from_args(args, model);
  for (const auto& s : model.chat_template.stop_strings()) params.stop_strings.push_back(s);
  std::vector<ChatMessage> messages;
  auto start = [&] {
    messages.clear();
    if (args.has("system")) messages.push_back({"system", args.str("system")});
  };
  start();
  Session session(model, model.transformer->dtype());
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
    GenerationResult r = generate(session, ids, params, [](const std::string& text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    });
    std::fputc('\n', stdout);
    messages.push_back({"assistant", r.text});
    ++params.sampling.seed;  // a fresh draw each turn, still reproducible from the first seed
    if (args.has("stats"))
      std::fprintf(stderr, "[prompt: %s | generation: %s | stopped: %s]\n", rate(r.prompt_tokens, r.prompt_seconds).c_str(),
                   rate(static_cast<int64_t>(r.tokens.size()), r.generation_seconds).c_str(), r.stop_reason.c_str());
  }
  return 0;
}

}  // namespace dms::cli
