// A strict reader of the Prometheus text exposition format (version 0.0.4), for checking what
// GET /metrics and ServeMetrics::render write: every line is a HELP, a TYPE or a sample, and
// whatever breaks the format's rules is listed in `errors`.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace dms::serve::test {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Exposition {
  std::map<std::string, std::string> help, type;  // by family name
  std::vector<Sample> samples;
  std::vector<std::string> errors;
  // The value of the sample with this name and exactly these labels; throws when there is none.
  double value(const std::string& name, const std::map<std::string, std::string>& labels = {}) const;
  // The samples of this name, in order.
  std::vector<Sample> all(const std::string& name) const;
};

// Rules checked: lines end in '\n'; names match [a-zA-Z_:][a-zA-Z0-9_:]*; label values are
// quoted; values parse whole as floats; one HELP and one TYPE per family, before its samples;
// a family's samples are contiguous; a counter's name ends in _total; a histogram's buckets carry
// le, rise with it, end at le="+Inf" and that bucket equals its _count.
Exposition parse_prometheus(const std::string& text);

}  // namespace dms::serve::test
