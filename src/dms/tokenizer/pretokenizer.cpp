#include "dms/tokenizer/pretokenizer.h"

#include "dms/tokenizer/byte_level.h"
#include "dms/tokenizer/json_fields.h"
#include "dms/tokenizer/utf8.h"

namespace dms {

namespace {

// The pattern GPT-2's ByteLevel pre-tokenizer splits with when use_regex is set.
const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::shared_ptr<const Regex> gpt2_regex() {
  static const auto re = std::make_shared<const Regex>(kGpt2Pattern, "ByteLevel pre-tokenizer");
  return re;
}

struct Span {
  size_t begin, end;
  bool is_match;
};

// Covers [0, size) with the matches and the gaps between them, in order.
std::vector<Span> spans_from_matches(const std::vector<std::pair<size_t, size_t>>& matches, size_t size) {
  std::vector<Span> spans;
  size_t pos = 0;
  for (auto [b, e] : matches) {
    if (b > pos) spans.push_back({pos, b, false});
    spans.push_back({b, e, true});
    pos = e;
  }
  if (pos < size) spans.push_back({pos, size, false});
  return spans;
}

std::vector<std::pair<size_t, size_t>> literal_matches(const std::string& text, const std::string& lit) {
  std::vector<std::pair<size_t, size_t>> out;
  if (lit.empty()) return out;
  size_t pos = 0;
  while ((pos = text.find(lit, pos)) != std::string::npos) {
    out.emplace_back(pos, pos + lit.size());
    pos += lit.size();
  }
  return out;
}

// Each numeric code point is a match of its own, as tokenizers' char-predicate patterns are.
std::vector<std::pair<size_t, size_t>> numeric_matches(const std::string& text) {
  std::vector<std::pair<size_t, size_t>> out;
  utf8::for_each_char(text, [&](char32_t cp, size_t pos, size_t len) {
    if (utf8::is_numeric(cp)) out.emplace_back(pos, pos + len);
  });
  return out;
}

std::vector<Span> apply_behavior(std::vector<Span> spans, SplitBehavior behavior) {
  std::vector<Span> out;
  switch (behavior) {
    case SplitBehavior::Isolated:
      return spans;
    case SplitBehavior::Removed:
      for (const auto& s : spans) if (!s.is_match) out.push_back(s);
      return out;
    case SplitBehavior::MergedWithPrevious: {
      bool previous_match = false;
      for (const auto& s : spans) {
        if (s.is_match && !previous_match && !out.empty()) out.back().end = s.end;
        else out.push_back(s);
        previous_match = s.is_match;
      }
      return out;
    }
    case SplitBehavior::MergedWithNext: {
      bool previous_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) out.back().begin = it->begin;
        else out.push_back(*it);
        previous_match = it->is_match;
      }
      return {out.rbegin(), out.rend()};
    }
    case SplitBehavior::Contiguous: {
      bool previous_match = false;
      for (const auto& s : spans) {
        if (s.is_match == previous_match && !out.empty()) out.back().end = s.end;
        else out.push_back(s);
        previous_match = s.is_match;
      }
      return out;
    }
  }
  return spans;
}

void split_pieces(std::vector<PrePiece>& pieces, SplitBehavior behavior, bool invert,
                  const auto& find_matches) {
  std::vector<PrePiece> out;
  out.reserve(pieces.size());
  for (auto& piece : pieces) {
    auto spans = spans_from_matches(find_matches(piece.text), piece.text.size());
    if (invert) for (auto& s : spans) s.is_match = !s.is_match;
    for (const auto& s : apply_behavior(std::move(spans), behavior)) {
      if (s.end == s.begin) continue;
      out.push_back({piece.text.substr(s.begin, s.end - s.begin), piece.at_start && s.begin == 0});
    }
  }
  pieces = std::move(out);
}

SplitBehavior parse_behavior(const std::string& name, const std::string& where, const std::string& field) {
  if (name == "Removed") return SplitBehavior::Removed;
  if (name == "Isolated") return SplitBehavior::Isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (name == "Contiguous") return SplitBehavior::Contiguous;
  fail(where, "field '" + field + ".behavior' has unknown value '" + name + "'");
}

}  // namespace

void PreTokenizer::parse(const nlohmann::json& node, const std::string& where,
                         const std::string& field, std::vector<Step>& out) {
  if (node.is_null()) return;
  std::string type = jsonf::type_of(node, where, field);
  if (type == "Sequence") {
    const auto& list = jsonf::require(node, "pretokenizers", where, field);
    if (!list.is_array()) fail(where, "field '" + field + ".pretokenizers' must be an array");
    for (size_t i = 0; i < list.size(); ++i) {
      parse(list[i], where, field + ".pretokenizers[" + std::to_string(i) + "]", out);
    }
  } else if (type == "Split") {
    Step s{.kind = Kind::Split};
    const auto& pattern = jsonf::require(node, "pattern", where, field);
    if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
      s.regex = std::make_shared<const Regex>(pattern["Regex"].get<std::string>(), where + ": " + field);
    } else if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string()) {
      s.literal = pattern["String"].get<std::string>();
    } else {
      fail(where, "field '" + field + ".pattern' must be {\"Regex\": ...} or {\"String\": ...}");
    }
    s.behavior = parse_behavior(jsonf::get_string(node, "behavior", where, field), where, field);
    s.invert = jsonf::get_bool(node, "invert", false, where, field);
    out.push_back(std::move(s));
  } else if (type == "ByteLevel") {
    Step s{.kind = Kind::ByteLevel};
    s.flag = jsonf::get_bool(node, "add_prefix_space", true, where, field);
    if (jsonf::get_bool(node, "use_regex", true, where, field)) s.regex = gpt2_regex();
    out.push_back(std::move(s));
  } else if (type == "Digits") {
    Step s{.kind = Kind::Digits};
    s.flag = jsonf::get_bool(node, "individual_digits", false, where, field);
    out.push_back(std::move(s));
  } else if (type == "Metaspace") {
    Step s{.kind = Kind::Metaspace};
    s.literal = jsonf::get_string(node, "replacement", where, field);
    if (utf8::first_invalid(s.literal) != std::string::npos || s.literal.empty()) {
      fail(where, "field '" + field + ".replacement' must be one character");
    }
    s.flag = jsonf::get_bool(node, "split", true, where, field);
    std::string scheme = "always";
    if (node.contains("prepend_scheme")) {
      scheme = jsonf::get_string(node, "prepend_scheme", where, field);
    } else if (!jsonf::get_bool(node, "add_prefix_space", true, where, field)) {
      scheme = "never";
    }
    if (scheme == "always") s.prepend = Prepend::Always;
    else if (scheme == "first") s.prepend = Prepend::First;
    else if (scheme == "never") s.prepend = Prepend::Never;
    else fail(where, "field '" + field + ".prepend_scheme' has unknown value '" + scheme + "'");
    out.push_back(std::move(s));
  } else {
    fail(where, "pre_tokenizer type '" + type + "' is not supported");
  }
}

PreTokenizer PreTokenizer::from_json(const nlohmann::json& node, const std::string& where) {
  PreTokenizer p;
  parse(node, where, "pre_tokenizer", p.steps_);
  return p;
}

PreTokenizer PreTokenizer::byte_level_gpt2() {
  PreTokenizer p;
  p.steps_.push_back({.kind = Kind::ByteLevel, .regex = gpt2_regex()});
  return p;
}

PreTokenizer PreTokenizer::digits_then_byte_level() {
  PreTokenizer p;
  p.steps_.push_back({.kind = Kind::Digits, .flag = true});
  p.steps_.push_back({.kind = Kind::ByteLevel, .regex = gpt2_regex()});
  return p;
}

PreTokenizer PreTokenizer::split_then_byte_level(const std::string& pattern) {
  PreTokenizer p;
  p.steps_.push_back({.kind = Kind::Split,
                      .regex = std::make_shared<const Regex>(pattern, "pre-tokenizer"),
                      .behavior = SplitBehavior::Isolated});
  p.steps_.push_back({.kind = Kind::ByteLevel});
  return p;
}

void PreTokenizer::apply_step(const Step& step, std::vector<PrePiece>& pieces) {
  switch (step.kind) {
    case Kind::Split:
      if (step.regex) {
        split_pieces(pieces, step.behavior, step.invert,
                     [&](const std::string& t) { return step.regex->find_all(t); });
      } else {
        split_pieces(pieces, step.behavior, step.invert,
                     [&](const std::string& t) { return literal_matches(t, step.literal); });
      }
      break;
    case Kind::Digits:
      split_pieces(pieces, step.flag ? SplitBehavior::Isolated : SplitBehavior::Contiguous, false,
                   numeric_matches);
      break;
    case Kind::ByteLevel:
      if (step.flag) {
        for (auto& p : pieces) if (p.text.empty() || p.text[0] != ' ') p.text = " " + p.text;
      }
      if (step.regex) {
        split_pieces(pieces, SplitBehavior::Isolated, false,
                     [&](const std::string& t) { return step.regex->find_all(t); });
      }
      for (auto& p : pieces) p.text = byte_level::encode(p.text);
      break;
    case Kind::Metaspace: {
      const std::string& rep = step.literal;
      for (auto& p : pieces) {
        std::string replaced;
        replaced.reserve(p.text.size() + rep.size());
        for (char c : p.text) {
          if (c == ' ') replaced += rep;
          else replaced += c;
        }
        bool starts = replaced.compare(0, rep.size(), rep) == 0;
        bool prepend = step.prepend == Prepend::Always || (step.prepend == Prepend::First && p.at_start);
        if (prepend && !starts) replaced = rep + replaced;
        p.text = std::move(replaced);
      }
      if (step.flag) {
        split_pieces(pieces, SplitBehavior::MergedWithNext, false,
                     [&](const std::string& t) { return literal_matches(t, rep); });
      }
      break;
    }
  }
}

void PreTokenizer::apply(std::vector<PrePiece>& pieces) const {
  for (const auto& step : steps_) apply_step(step, pieces);
}

}  // namespace dms
