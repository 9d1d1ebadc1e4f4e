#include "dms/tokenizer/normalizer.h"

#include <cstdlib>
#include <memory>

#include <utf8proc.h>

#include "dms/tokenizer/json_fields.h"

namespace dms {

namespace {

std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
  }
  out.append(s, pos, std::string::npos);
  return out;
}

std::string unicode_normalize(const std::string& s, utf8proc_option_t options) {
  utf8proc_uint8_t* out = nullptr;
  auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                        static_cast<utf8proc_ssize_t>(s.size()), &out,
                        static_cast<utf8proc_option_t>(options | UTF8PROC_STABLE));
  if (n < 0) fail("normalizer", std::string("Unicode normalization failed: ") + utf8proc_errmsg(n));
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(out, &std::free);
  return std::string(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
}

}  // namespace

void Normalizer::parse(const nlohmann::json& node, const std::string& where,
                       const std::string& field, std::vector<Step>& out) {
  if (node.is_null()) return;
  std::string type = jsonf::type_of(node, where, field);
  if (type == "Sequence") {
    const auto& list = jsonf::require(node, "normalizers", where, field);
    if (!list.is_array()) fail(where, "field '" + field + ".normalizers' must be an array");
    for (size_t i = 0; i < list.size(); ++i) {
      parse(list[i], where, field + ".normalizers[" + std::to_string(i) + "]", out);
    }
  } else if (type == "NFC") {
    out.push_back({Kind::NFC, {}, {}});
  } else if (type == "NFD") {
    out.push_back({Kind::NFD, {}, {}});
  } else if (type == "NFKC") {
    out.push_back({Kind::NFKC, {}, {}});
  } else if (type == "NFKD") {
    out.push_back({Kind::NFKD, {}, {}});
  } else if (type == "Prepend") {
    out.push_back({Kind::Prepend, jsonf::get_string(node, "prepend", where, field), {}});
  } else if (type == "Replace") {
    const auto& pattern = jsonf::require(node, "pattern", where, field);
    if (!pattern.is_object() || !pattern.contains("String") || !pattern["String"].is_string()) {
      fail(where, "field '" + field + ".pattern' is not supported (only {\"String\": ...} patterns are)");
    }
    out.push_back({Kind::Replace, pattern["String"].get<std::string>(),
                   jsonf::get_string(node, "content", where, field)});
  } else {
    fail(where, "normalizer type '" + type + "' is not supported");
  }
}

Normalizer Normalizer::from_json(const nlohmann::json& node, const std::string& where) {
  Normalizer n;
  parse(node, where, "normalizer", n.steps_);
  return n;
}

Normalizer Normalizer::nfc() {
  Normalizer n;
  n.steps_.push_back({Kind::NFC, {}, {}});
  return n;
}

Normalizer Normalizer::sentencepiece(bool add_prefix) {
  const std::string metaspace = "\xE2\x96\x81";
  Normalizer n;
  if (add_prefix) n.steps_.push_back({Kind::Prepend, metaspace, {}});
  n.steps_.push_back({Kind::Replace, " ", metaspace});
  return n;
}

std::string Normalizer::apply(std::string text) const {
  for (const auto& step : steps_) {
    switch (step.kind) {
      case Kind::NFC: text = unicode_normalize(text, UTF8PROC_COMPOSE); break;
      case Kind::NFD: text = unicode_normalize(text, UTF8PROC_DECOMPOSE); break;
      case Kind::NFKC: text = unicode_normalize(text, static_cast<utf8proc_option_t>(UTF8PROC_COMPOSE | UTF8PROC_COMPAT)); break;
      case Kind::NFKD: text = unicode_normalize(text, static_cast<utf8proc_option_t>(UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT)); break;
      case Kind::Prepend:
        // tokenizers prepends only to non-empty pieces.
        if (!text.empty()) text = step.a + text;
        break;
      case Kind::Replace: text = replace_all(text, step.a, step.b); break;
    }
  }
  return text;
}

}  // namespace dms
