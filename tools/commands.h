// The `dms` subcommands. Each parses its own options (argv excludes the subcommand name)
// and returns the process exit status; errors propagate as dms::Error / UsageError.
#pragma once

namespace dms::cli {

int run_generate(int argc, char** argv);
int run_chat(int argc, char** argv);
int run_info(int argc, char** argv);
int run_bench(int argc, char** argv);
int run_eval(int argc, char** argv);
int run_solve(int argc, char** argv);
int run_gen_data(int argc, char** argv);
int run_retrofit(int argc, char** argv);
int run_serve(int argc, char** argv);

}  // namespace dms::cli
