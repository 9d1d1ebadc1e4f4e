#include "dms/tokenizer/decoder.h"

#include "dms/tokenizer/byte_level.h"
#include "dms/tokenizer/json_fields.h"
#include "dms/tokenizer/utf8.h"

namespace dms {

namespace {

const char* const kReplacementChar = "\xEF\xBF\xBD";
const char* const kMetaspace = "\xE2\x96\x81";

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// "<0xE4>" -> 0xE4; -1 for anything else.
int byte_token_value(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  int hi = hex_value(t[3]), lo = hex_value(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

std::string replace_all(std::string_view s, const std::string& from, const std::string& to) {
  if (from.empty()) return std::string(s);
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out += to;
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

// Removes up to `start` leading and `stop` trailing copies of `c` (a whole UTF-8 character).
std::string strip_chars(std::string s, const std::string& c, size_t start, size_t stop) {
  size_t head = 0;
  for (size_t i = 0; i < start && s.compare(head, c.size(), c) == 0; ++i) head += c.size();
  size_t tail = s.size();
  for (size_t i = 0; i < stop && tail >= head + c.size() && s.compare(tail - c.size(), c.size(), c) == 0; ++i) {
    tail -= c.size();
  }
  return s.substr(head, tail - head);
}

std::string single_char(const nlohmann::json& node, const char* key, const std::string& where,
                        const std::string& field) {
  std::string c = jsonf::get_string(node, key, where, field);
  if (c.empty() || utf8::valid_sequence_length(c, 0) != c.size()) {
    fail(where, "field '" + field + "." + key + "' must be exactly one character");
  }
  return c;
}

size_t get_count(const nlohmann::json& node, const char* key, const std::string& where, const std::string& field) {
  const auto& v = jsonf::require(node, key, where, field);
  if (!v.is_number_unsigned()) fail(where, "field '" + field + "." + key + "' must be a non-negative integer");
  return v.get<size_t>();
}

void flatten(const nlohmann::json& node, const std::string& where, const std::string& field,
             std::vector<std::pair<const nlohmann::json*, std::string>>& out) {
  std::string type = jsonf::type_of(node, where, field);
  if (type != "Sequence") {
    out.emplace_back(&node, field);
    return;
  }
  const auto& list = jsonf::require(node, "decoders", where, field);
  if (!list.is_array()) fail(where, "field '" + field + ".decoders' must be an array");
  for (size_t i = 0; i < list.size(); ++i) flatten(list[i], where, field + ".decoders[" + std::to_string(i) + "]", out);
}

}  // namespace

Decoder Decoder::from_json(const nlohmann::json& node, const std::string& where) {
  Decoder d;
  if (node.is_null()) {
    d.space_join_ = true;
    return d;
  }
  std::vector<std::pair<const nlohmann::json*, std::string>> steps;
  flatten(node, where, "decoder", steps);
  // Token-level steps first; ByteFallback or ByteLevel then close the per-token part, Fuse joins,
  // and only a leading Strip may follow the join.
  enum class Phase { PerToken, AfterByteFallback, Fused } phase = Phase::PerToken;
  for (const auto& entry : steps) {
    const nlohmann::json* step = entry.first;
    const std::string& field = entry.second;  // a plain reference: lambdas may capture it
    std::string type = jsonf::type_of(*step, where, field);
    auto unsupported_here = [&]() {
      fail(where, "decoder '" + type + "' at '" + field + "' is not supported in this position of the chain");
    };
    if (type == "Replace") {
      if (phase != Phase::PerToken) unsupported_here();
      const auto& pattern = jsonf::require(*step, "pattern", where, field);
      if (!pattern.is_object() || !pattern.contains("String") || !pattern["String"].is_string()) {
        fail(where, "field '" + field + ".pattern' is not supported (only {\"String\": ...} patterns are)");
      }
      d.token_ops_.push_back({TokenOp::Replace, pattern["String"].get<std::string>(),
                              jsonf::get_string(*step, "content", where, field)});
    } else if (type == "Metaspace") {
      if (phase != Phase::PerToken) unsupported_here();
      std::string scheme = "always";
      if (step->contains("prepend_scheme")) scheme = jsonf::get_string(*step, "prepend_scheme", where, field);
      else if (!jsonf::get_bool(*step, "add_prefix_space", true, where, field)) scheme = "never";
      TokenOp op{TokenOp::Metaspace, single_char(*step, "replacement", where, field), " "};
      op.drop_in_first = scheme != "never";
      d.token_ops_.push_back(op);
    } else if (type == "Strip") {
      std::string c = single_char(*step, "content", where, field);
      size_t start = get_count(*step, "start", where, field), stop = get_count(*step, "stop", where, field);
      if (phase == Phase::PerToken) {
        TokenOp op{TokenOp::Strip, c, {}};
        op.start = start;
        op.stop = stop;
        d.token_ops_.push_back(op);
      } else if (phase == Phase::Fused && stop == 0 && d.strip_start_ == 0) {
        d.strip_char_ = c;
        d.strip_start_ = start;
      } else {
        unsupported_here();
      }
    } else if (type == "ByteFallback") {
      if (phase != Phase::PerToken || d.byte_level_) unsupported_here();
      d.byte_fallback_ = true;
      phase = Phase::AfterByteFallback;
    } else if (type == "Fuse") {
      phase = Phase::Fused;
    } else if (type == "ByteLevel") {
      if (phase != Phase::PerToken) unsupported_here();
      d.byte_level_ = true;
      phase = Phase::Fused;
    } else {
      fail(where, "decoder type '" + type + "' is not supported");
    }
  }
  return d;
}

Decoder Decoder::byte_level() {
  Decoder d;
  d.byte_level_ = true;
  return d;
}

Decoder Decoder::sentencepiece(bool strip_leading_space) {
  Decoder d;
  d.token_ops_.push_back({TokenOp::Replace, kMetaspace, " "});
  d.byte_fallback_ = true;
  if (strip_leading_space) {
    d.strip_char_ = " ";
    d.strip_start_ = 1;
  }
  return d;
}

std::string Decoder::apply_token_ops(std::string_view token, size_t index) const {
  std::string t(token);
  for (const auto& op : token_ops_) {
    switch (op.kind) {
      case TokenOp::Replace: t = replace_all(t, op.from, op.to); break;
      case TokenOp::Metaspace: t = replace_all(t, op.from, index == 0 && op.drop_in_first ? "" : " "); break;
      case TokenOp::Strip: t = strip_chars(std::move(t), op.from, op.start, op.stop); break;
    }
  }
  return t;
}

std::string Decoder::piece(std::string_view token, bool first) const {
  std::string t = apply_token_ops(token, first ? 0 : 1);
  if (byte_fallback_) {
    if (int b = byte_token_value(t); b >= 0) t = std::string(1, static_cast<char>(b));
  } else if (byte_level_) {
    std::string bytes;
    if (byte_level::decode(t, bytes)) t = std::move(bytes);
  } else if (space_join_ && !first) {
    t = " " + t;
  }
  if (first && strip_start_ > 0) t = strip_chars(std::move(t), strip_char_, strip_start_, 0);
  return t;
}

std::string DecodeStream::emit(std::string text) {
  if (strip_left_ > 0) {
    const std::string& c = d_.strip_char_;
    size_t head = 0;
    while (strip_left_ > 0 && text.compare(head, c.size(), c) == 0) {
      head += c.size();
      --strip_left_;
    }
    // Only the very start of the text is stripped: anything else ends the stripping.
    if (head < text.size()) strip_left_ = 0;
    text.erase(0, head);
  }
  return text;
}

std::string DecodeStream::flush_run() {
  if (run_.empty()) return {};
  std::string out;
  if (utf8::first_invalid(run_) == std::string::npos) {
    out = std::move(run_);
  } else {
    for (size_t i = 0; i < run_.size(); ++i) out += kReplacementChar;
  }
  run_.clear();
  return out;
}

std::string DecodeStream::push(std::string_view token) {
  std::string t = d_.apply_token_ops(token, index_);
  bool first = index_ == 0;
  ++index_;
  if (d_.byte_fallback_) {
    if (int b = byte_token_value(t); b >= 0) {
      run_ += static_cast<char>(b);
      return {};
    }
    std::string out = flush_run();
    out += t;
    return emit(std::move(out));
  }
  if (d_.byte_level_) {
    if (!byte_level::decode(t, bytes_)) bytes_ += t;
    size_t keep = utf8::incomplete_tail(bytes_);
    std::string ready = utf8::lossy(std::string_view(bytes_).substr(0, bytes_.size() - keep));
    bytes_.erase(0, bytes_.size() - keep);
    return emit(std::move(ready));
  }
  if (d_.space_join_ && !first) t = " " + t;
  return emit(std::move(t));
}

std::string DecodeStream::finish() {
  std::string out = flush_run();
  if (!bytes_.empty()) {
    out += utf8::lossy(bytes_);
    bytes_.clear();
  }
  return emit(std::move(out));
}

}  // namespace dms
