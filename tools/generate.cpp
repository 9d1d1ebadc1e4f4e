#include <cstdio>
#include <iostream>
#include <iterator>

#include "common.h"
#include "commands.h"

namespace dms::cli {

int run_generate(int argc, char** argv) {
  Args args("generate", "[options] [PROMPT]",
            "Continues PROMPT (read from standard input when absent or '-'), streaming the text to standard\n"
            "output; prompt and generation speed go to standard error at the end.");
  add_model_options(args);
  add_generation_options(args);
  args.flag("chat", "send the prompt as a user message through the model's chat template")
      .option("system", "TEXT", "system message, with --chat")
      .positionals(1);
  if (!args.parse(argc, argv)) return 0;
  if (args.has("system") && !args.has("chat")) throw UsageError("--system: only meaningful with --chat");

  std::string prompt;
  if (args.positional().empty() || args.positional()[0] == "-") {
    prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    prompt = args.positional()[0];
  }
  if (prompt.empty()) throw UsageError("the prompt is empty");

  Model model = load_model_from_args(args);
  GenerationParams params = generation_params_from_args(args, model);
  std::vector<int32_t> ids;
  if (args.has("chat")) {
    std::vector<ChatMessage> messages;
    if (args.has("system")) messages.push_back({"system", args.str("system")});
    messages.push_back({"user", prompt});
    // The rendered template carries its own BOS text where the family has one.
    ids = model.tokenizer->encode(model.chat_template.render(messages, true), false);
    for (const auto& s : model.chat_template.stop_strings()) params.stop_strings.push_back(s);
  } else {
    ids = model.tokenizer->encode(prompt, model.tokenizer->add_bos_default());
  }

  Session session(model, model.transformer->dtype());
  GenerationResult r = generate(session, ids, params, [](const std::string& text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  });
  std::fputc('\n', stdout);
  std::fprintf(stderr, "\nprompt: %s | generation: %s | stopped: %s | seed %llu | KV cache %.1f MiB\n",
               rate(r.prompt_tokens, r.prompt_seconds).c_str(),
               rate(static_cast<int64_t>(r.tokens.size()), r.generation_seconds).c_str(), r.stop_reason.c_str(),
               static_cast<unsigned long long>(params.sampling.seed), session.kv_bytes_held() / 1048576.0);
  return 0;
}

}  // namespace dms::cli
