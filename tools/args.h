// Command-line options for the `dms` subcommands: declared once with their help text, parsed
// strictly (unknown options and malformed values are errors that name the option).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "dms/util/error.h"

namespace dms::cli {

// A mistake in how the command was called (exit status 2, with a pointer to --help).
struct UsageError : Error {
  using Error::Error;
};

// f(), with an Error it throws (a library's verdict on an option's value) turned into a
// UsageError.
template <class F>
auto as_usage(F f) -> decltype(f()) {
  try {
    return f();
  } catch (const UsageError&) {
    throw;
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
}

class Args {
 public:
  Args(std::string command, std::string synopsis, std::string description);

  // An option taking a value; `fallback` is shown in --help and returned when absent.
  Args& option(const std::string& name, const std::string& value_name, const std::string& help,
               std::optional<std::string> fallback = std::nullopt);
  // An option that may be given several times.
  Args& repeated(const std::string& name, const std::string& value_name, const std::string& help);
  Args& flag(const std::string& name, const std::string& help);
  // Up to `max` positional arguments, described in the synopsis.
  Args& positionals(size_t max);

  // Sets an option's value as if it had been given on the command line.
  void set(const std::string& name, const std::string& value);

  // Returns false when --help was asked for (the help has been printed).
  bool parse(int argc, char** argv);
  std::string help() const;

  bool has(const std::string& name) const;
  std::string str(const std::string& name) const;
  int64_t integer(const std::string& name) const;
  double number(const std::string& name) const;
  std::vector<std::string> all(const std::string& name) const;
  // An integer no smaller than `min` (a usage error naming the option otherwise).
  int64_t at_least(const std::string& name, int64_t min) const;
  // Comma-separated lists: names (empty items skipped), integers no smaller than `min`, numbers in
  // [lo, hi]. An empty list or a bad item is a usage error naming the option.
  std::vector<std::string> names(const std::string& name) const;
  std::vector<int64_t> integers(const std::string& name, int64_t min) const;
  std::vector<double> numbers(const std::string& name, double lo, double hi) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  struct Spec {
    std::string value_name, help;
    std::optional<std::string> fallback;
    bool takes_value = true, repeats = false;
  };
  const Spec& spec(const std::string& name) const;

  std::string command_, synopsis_, description_;
  std::vector<std::pair<std::string, Spec>> specs_;
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
  size_t max_positional_ = 0;
};

}  // namespace dms::cli
