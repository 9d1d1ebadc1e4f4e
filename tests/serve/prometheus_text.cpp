#include "prometheus_text.h"

#include <cmath>
#include <cstdlib>
#include <set>
#include <sstream>
#include <stdexcept>

namespace dms::serve::test {

namespace {

bool valid_name(const std::string& name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool parse_value(const std::string& text, double& out) {
  if (text == "+Inf") return out = INFINITY, true;
  if (text == "-Inf") return out = -INFINITY, true;
  if (text.empty()) return false;
  char* end = nullptr;
  out = std::strtod(text.c_str(), &end);
  return end == text.c_str() + text.size();
}

// The family a sample belongs to: a histogram's _bucket, _sum and _count lines are its own.
std::string family_of(const std::string& name, const std::map<std::string, std::string>& types) {
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string s = suffix;
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      const std::string base = name.substr(0, name.size() - s.size());
      auto it = types.find(base);
      if (it != types.end() && it->second == "histogram") return base;
    }
  }
  return name;
}

// `name{k="v",...} value` into `sample`; false (with `why`) when the line is not that.
bool parse_sample(const std::string& line, Sample& sample, std::string& why) {
  size_t i = 0;
  while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
  sample.name = line.substr(0, i);
  if (!valid_name(sample.name)) return why = "bad metric name '" + sample.name + "'", false;
  if (i < line.size() && line[i] == '{') {
    ++i;
    while (i < line.size() && line[i] != '}') {
      const size_t eq = line.find('=', i);
      if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') return why = "bad label", false;
      const std::string key = line.substr(i, eq - i);
      if (!valid_name(key)) return why = "bad label name '" + key + "'", false;
      const size_t close = line.find('"', eq + 2);
      if (close == std::string::npos) return why = "unterminated label value", false;
      sample.labels[key] = line.substr(eq + 2, close - eq - 2);
      i = close + 1;
      if (i < line.size() && line[i] == ',') ++i;
    }
    if (i >= line.size()) return why = "unterminated labels", false;
    ++i;
  }
  if (i >= line.size() || line[i] != ' ') return why = "no space before the value", false;
  if (!parse_value(line.substr(i + 1), sample.value)) return why = "bad value '" + line.substr(i + 1) + "'", false;
  return true;
}

void check_histogram(const std::string& family, const std::vector<Sample>& samples, std::vector<std::string>& errors) {
  double last_le = -INFINITY, last_count = 0, inf_count = -1, count = -1;
  bool sum = false;
  for (const Sample& s : samples) {
    if (family_of(s.name, {{family, "histogram"}}) != family) continue;
    if (s.name == family + "_bucket") {
      auto le = s.labels.find("le");
      double bound = 0;
      if (le == s.labels.end() || !parse_value(le->second, bound)) {
        errors.push_back(family + ": a bucket without a numeric le");
        continue;
      }
      if (bound <= last_le) errors.push_back(family + ": le " + le->second + " does not rise");
      if (s.value < last_count) errors.push_back(family + ": bucket le=" + le->second + " is not cumulative");
      last_le = bound;
      last_count = s.value;
      if (std::isinf(bound)) inf_count = s.value;
    } else if (s.name == family + "_count") {
      count = s.value;
    } else if (s.name == family + "_sum") {
      sum = true;
    }
  }
  if (inf_count < 0) errors.push_back(family + ": no le=\"+Inf\" bucket");
  if (count < 0 || !sum) errors.push_back(family + ": no _count or _sum");
  if (inf_count != count) errors.push_back(family + ": the +Inf bucket differs from _count");
}

}  // namespace

double Exposition::value(const std::string& name, const std::map<std::string, std::string>& labels) const {
  for (const Sample& s : samples)
    if (s.name == name && s.labels == labels) return s.value;
  throw std::runtime_error("no sample " + name + " with these labels");
}

std::vector<Sample> Exposition::all(const std::string& name) const {
  std::vector<Sample> out;
  for (const Sample& s : samples)
    if (s.name == name) out.push_back(s);
  return out;
}

Exposition parse_prometheus(const std::string& text) {
  Exposition e;
  if (!text.empty() && text.back() != '\n') e.errors.push_back("the text does not end in a newline");
  std::istringstream in(text);
  std::string line, current;  // current: the family whose lines are being read
  std::set<std::string> closed;  // families whose lines have ended
  const auto enter = [&](const std::string& family) {
    if (family == current) return;
    if (closed.count(family)) e.errors.push_back("the lines of " + family + " are not together");
    if (!current.empty()) closed.insert(current);
    current = family;
  };
  while (std::getline(in, line)) {
    if (line.empty()) {
      e.errors.push_back("an empty line");
      continue;
    }
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      const bool help = line[2] == 'H';
      const size_t space = line.find(' ', 7);
      const std::string name = line.substr(7, space == std::string::npos ? std::string::npos : space - 7);
      const std::string rest = space == std::string::npos ? "" : line.substr(space + 1);
      if (!valid_name(name)) e.errors.push_back("bad name in: " + line);
      if (rest.empty()) e.errors.push_back("nothing after the name in: " + line);
      auto& table = help ? e.help : e.type;
      if (table.count(name)) e.errors.push_back("a second " + line.substr(2, 4) + " for " + name);
      enter(name);
      table[name] = rest;
      if (!help && rest != "counter" && rest != "gauge" && rest != "histogram")
        e.errors.push_back(name + ": unknown type '" + rest + "'");
      if (!help && rest == "counter" && !(name.size() > 6 && name.compare(name.size() - 6, 6, "_total") == 0))
        e.errors.push_back(name + ": a counter whose name does not end in _total");
      continue;
    }
    if (line[0] == '#') {
      e.errors.push_back("an unknown comment: " + line);
      continue;
    }
    Sample s;
    std::string why;
    if (!parse_sample(line, s, why)) {
      e.errors.push_back(why + " in: " + line);
      continue;
    }
    const std::string family = family_of(s.name, e.type);
    if (!e.type.count(family) || !e.help.count(family)) e.errors.push_back(s.name + ": no HELP and TYPE before it");
    enter(family);
    e.samples.push_back(std::move(s));
  }
  for (const auto& [family, type] : e.type)
    if (type == "histogram") check_histogram(family, e.samples, e.errors);
  return e;
}

}  // namespace dms::serve::test
