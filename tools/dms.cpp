// dms: the command line of dms.cpp, one subcommand per job.
#include <cstdio>
#include <cstring>
#include <string>

#include "args.h"
#include "commands.h"

namespace {

struct Subcommand {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

constexpr Subcommand kSubcommands[] = {
    {"generate", dms::cli::run_generate, "continue a prompt (argument or stdin), streaming the text"},
    {"chat", dms::cli::run_chat, "talk with a model, turn by turn, using its chat template"},
    {"serve", dms::cli::run_serve, "an OpenAI-compatible HTTP server over the compressed KV cache"},
    {"info", dms::cli::run_info, "describe a checkpoint: architecture, size, KV bytes per token"},
    {"bench", dms::cli::run_bench, "decode speed and KV memory of cache policies over contexts and batches"},
    {"eval", dms::cli::run_eval, "quality of cache policies against dense at matched compression"},
    {"solve", dms::cli::run_solve, "accuracy on problems with checkable answers against the KV memory spent"},
    {"gen-data", dms::cli::run_gen_data, "write a training corpus of the model's own replies to a prompt set"},
    {"retrofit", dms::cli::run_retrofit, "teach a model DMS decision heads by distillation from itself"},
};

void print_usage(FILE* out) {
  std::fputs("usage: dms <command> [options]\n\ncommands:\n", out);
  for (const auto& c : kSubcommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fputs("\n'dms <command> --help' describes a command's options.\n", out);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    print_usage(stdout);
    return 0;
  }
  for (const auto& c : kSubcommands) {
    if (name != c.name) continue;
    try {
      return c.run(argc - 2, argv + 2);
    } catch (const dms::cli::UsageError& e) {
      std::fprintf(stderr, "dms %s: %s\n(see 'dms %s --help')\n", c.name, e.what(), c.name);
      return 2;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dms %s: error: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "dms: unknown command '%s'\n\n", name.c_str());
  print_usage(stderr);
  return 2;
}
