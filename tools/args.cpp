#include "args.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace dms::cli {
namespace {

std::string number_text(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", v);
  return text;
}

}  // namespace

Args::Args(std::string command, std::string synopsis, std::string description)
    : command_(std::move(command)), synopsis_(std::move(synopsis)), description_(std::move(description)) {}

Args& Args::option(const std::string& name, const std::string& value_name, const std::string& help,
                   std::optional<std::string> fallback) {
  specs_.push_back({name, Spec{value_name, help, std::move(fallback)}});
  return *this;
}

Args& Args::repeated(const std::string& name, const std::string& value_name, const std::string& help) {
  specs_.push_back({name, Spec{value_name, help, std::nullopt, true, true}});
  return *this;
}

Args& Args::flag(const std::string& name, const std::string& help) {
  specs_.push_back({name, Spec{"", help, std::nullopt, false}});
  return *this;
}

Args& Args::positionals(size_t max) {
  max_positional_ = max;
  return *this;
}

const Args::Spec& Args::spec(const std::string& name) const {
  for (const auto& [n, s] : specs_)
    if (n == name) return s;
  throw UsageError("--" + name + ": not an option of 'dms " + command_ + "'");
}

bool Args::parse(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    if (a.size() > 2 && a.starts_with("--")) {
      std::string name = a.substr(2), value;
      const size_t eq = name.find('=');
      const bool inline_value = eq != std::string::npos;
      if (inline_value) {
        value = name.substr(eq + 1);
        name.resize(eq);
      }
      const Spec& s = spec(name);
      if (!s.takes_value) {
        if (inline_value) throw UsageError("--" + name + ": takes no value");
        values_[name].push_back("");
        continue;
      }
      if (!inline_value) {
        if (i + 1 >= argc) throw UsageError("--" + name + ": needs a value (" + s.value_name + ")");
        value = argv[++i];
      }
      if (!s.repeats && values_.count(name)) throw UsageError("--" + name + ": given more than once");
      values_[name].push_back(value);
      continue;
    }
    if (positional_.size() >= max_positional_)
      throw UsageError("unexpected argument '" + a + "' (see 'dms " + command_ + " --help')");
    positional_.push_back(a);
  }
  return true;
}

std::string Args::help() const {
  std::string out = "usage: dms " + command_ + " " + synopsis_ + "\n\n" + description_ + "\n\noptions:\n";
  for (const auto& [name, s] : specs_) {
    std::string left = "  --" + name + (s.takes_value ? " " + s.value_name : "");
    if (left.size() < 26) left.resize(26, ' ');
    else left += "\n" + std::string(26, ' ');
    out += left + s.help;
    if (s.fallback) out += " (default: " + *s.fallback + ")";
    out += "\n";
  }
  out += "  --help                  show this help\n";
  return out;
}

void Args::set(const std::string& name, const std::string& value) {
  spec(name);
  values_[name] = {value};
}

bool Args::has(const std::string& name) const {
  spec(name);
  return values_.count(name) > 0;
}

std::string Args::str(const std::string& name) const {
  const Spec& s = spec(name);
  auto it = values_.find(name);
  if (it != values_.end()) return it->second.back();
  if (s.fallback) return *s.fallback;
  throw UsageError("--" + name + " is required");
}

int64_t Args::integer(const std::string& name) const {
  const std::string v = str(name);
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE) throw UsageError("--" + name + ": expected an integer, got '" + v + "'");
  return x;
}

double Args::number(const std::string& name) const {
  const std::string v = str(name);
  char* end = nullptr;
  errno = 0;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || errno == ERANGE) throw UsageError("--" + name + ": expected a number, got '" + v + "'");
  return x;
}

std::vector<std::string> Args::all(const std::string& name) const {
  spec(name);
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

int64_t Args::at_least(const std::string& name, int64_t min) const {
  const int64_t v = integer(name);
  if (v < min) throw UsageError("--" + name + ": must be at least " + std::to_string(min));
  return v;
}

std::vector<std::string> Args::names(const std::string& name) const {
  std::vector<std::string> out;
  std::stringstream in(str(name));
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

std::vector<int64_t> Args::integers(const std::string& name, int64_t min) const {
  std::vector<int64_t> out;
  for (const auto& item : names(name)) {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (*end != '\0' || errno == ERANGE || v < min)
      throw UsageError("--" + name + ": expected integers >= " + std::to_string(min) + " separated by commas, got '" +
                       str(name) + "'");
    out.push_back(v);
  }
  if (out.empty()) throw UsageError("--" + name + ": empty list");
  return out;
}

std::vector<double> Args::numbers(const std::string& name, double lo, double hi) const {
  std::vector<double> out;
  for (const auto& item : names(name)) {
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    if (*end != '\0' || !(v >= lo && v <= hi))
      throw UsageError("--" + name + ": expected numbers in [" + number_text(lo) + ", " + number_text(hi) +
                       "] separated by commas, got '" + str(name) + "'");
    out.push_back(v);
  }
  if (out.empty()) throw UsageError("--" + name + ": empty list");
  return out;
}

}  // namespace dms::cli
