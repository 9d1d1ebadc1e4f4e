// Tokenizer::from_hf_dir: tokenizer.json (+ tokenizer_config.json, chat_template.jinja).
#include <filesystem>
#include <fstream>
#include <sstream>

#include "dms/tokenizer/json_fields.h"
#include "dms/tokenizer/tokenizer.h"
#include "dms/tokenizer/tokenizer_impl.h"
#include "dms/tokenizer/utf8.h"

namespace dms {

namespace {

using nlohmann::json;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot be opened");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(path, "cannot be read");
  return ss.str();
}

json parse_json(const std::string& text, const std::string& path) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {  // parse_error, out_of_range (a number past a double)
    fail(path, std::string("invalid JSON: ") + e.what());
  }
}

int32_t token_id_value(const json& v, const std::string& where, const std::string& field) {
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
    fail(where, "field '" + field + "' must be a token id (a non-negative integer)");
  }
  return static_cast<int32_t>(v.get<int64_t>());
}

std::unordered_map<std::string, int32_t> parse_vocab(const json& model, const std::string& where) {
  const auto& vocab = jsonf::require(model, "vocab", where, "model");
  if (!vocab.is_object()) fail(where, "field 'model.vocab' must be an object of token -> id");
  if (vocab.empty()) fail(where, "field 'model.vocab' is empty");
  std::unordered_map<std::string, int32_t> out;
  std::unordered_map<int32_t, std::string> seen;
  out.reserve(vocab.size());
  for (const auto& [text, id_json] : vocab.items()) {
    int32_t id = token_id_value(id_json, where, "model.vocab[\"" + text + "\"]");
    if (auto [it, fresh] = seen.emplace(id, text); !fresh) {
      fail(where, "field 'model.vocab' gives id " + std::to_string(id) + " to both '" + it->second +
                      "' and '" + text + "'");
    }
    out.emplace(text, id);
  }
  return out;
}

std::vector<BpeMerge> parse_merges(const json& model, const std::unordered_map<std::string, int32_t>& vocab,
                                   const std::string& where) {
  std::vector<BpeMerge> merges;
  auto it = model.find("merges");
  if (it == model.end() || it->is_null()) return merges;
  if (!it->is_array()) fail(where, "field 'model.merges' must be an array");
  merges.reserve(it->size());
  for (size_t i = 0; i < it->size(); ++i) {
    const auto& m = (*it)[i];
    std::string field = "model.merges[" + std::to_string(i) + "]";
    std::string left, right;
    if (m.is_string()) {
      std::string s = m.get<std::string>();
      size_t sp = s.find(' ', 1);
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        fail(where, "field '" + field + "' must be two tokens separated by one space, got '" + s + "'");
      }
      left = s.substr(0, sp);
      right = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      fail(where, "field '" + field + "' must be a string \"a b\" or a pair [\"a\", \"b\"]");
    }
    for (const auto* part : {&left, &right}) {
      if (!vocab.count(*part)) fail(where, "field '" + field + "' names '" + *part + "', which is not in model.vocab");
    }
    auto l = vocab.find(left), r = vocab.find(right);
    if (!vocab.count(left + right)) {
      fail(where, "field '" + field + "' merges into '" + left + right + "', which is not in model.vocab");
    }
    merges.push_back({l->second, r->second, static_cast<int32_t>(i)});
  }
  return merges;
}

std::vector<AddedToken> parse_added(const json& root, const std::string& where) {
  std::vector<AddedToken> out;
  auto it = root.find("added_tokens");
  if (it == root.end() || it->is_null()) return out;
  if (!it->is_array()) fail(where, "field 'added_tokens' must be an array");
  for (size_t i = 0; i < it->size(); ++i) {
    const auto& t = (*it)[i];
    std::string field = "added_tokens[" + std::to_string(i) + "]";
    AddedToken a;
    a.id = token_id_value(jsonf::require(t, "id", where, field), where, field + ".id");
    a.content = jsonf::get_string(t, "content", where, field);
    a.special = jsonf::get_bool(t, "special", false, where, field);
    a.lstrip = jsonf::get_bool(t, "lstrip", false, where, field);
    a.rstrip = jsonf::get_bool(t, "rstrip", false, where, field);
    a.single_word = jsonf::get_bool(t, "single_word", false, where, field);
    a.normalized = jsonf::get_bool(t, "normalized", !a.special, where, field);
    out.push_back(std::move(a));
  }
  return out;
}

// The special token a post-processor puts before the text, if any.
std::optional<int32_t> post_processor_bos(const json& node, const std::string& where, const std::string& field) {
  if (node.is_null()) return std::nullopt;
  std::string type = jsonf::type_of(node, where, field);
  if (type == "ByteLevel") return std::nullopt;
  if (type == "Sequence") {
    const auto& list = jsonf::require(node, "processors", where, field);
    if (!list.is_array()) fail(where, "field '" + field + ".processors' must be an array");
    std::optional<int32_t> bos;
    for (size_t i = 0; i < list.size(); ++i) {
      auto b = post_processor_bos(list[i], where, field + ".processors[" + std::to_string(i) + "]");
      if (b) bos = b;
    }
    return bos;
  }
  if (type != "TemplateProcessing") fail(where, "post_processor type '" + type + "' is not supported");
  const auto& single = jsonf::require(node, "single", where, field);
  if (!single.is_array()) fail(where, "field '" + field + ".single' must be an array");
  for (size_t i = 0; i < single.size(); ++i) {
    const auto& piece = single[i];
    if (piece.contains("Sequence")) return std::nullopt;  // nothing comes before the text
    if (!piece.contains("SpecialToken")) {
      fail(where, "field '" + field + ".single[" + std::to_string(i) + "]' must be a Sequence or a SpecialToken");
    }
    std::string name = jsonf::get_string(piece["SpecialToken"], "id", where, field + ".single[" + std::to_string(i) + "].SpecialToken");
    const auto& specials = jsonf::require(node, "special_tokens", where, field);
    const auto& entry = jsonf::require(specials, name, where, field + ".special_tokens");
    const auto& ids = jsonf::require(entry, "ids", where, field + ".special_tokens." + name);
    if (!ids.is_array() || ids.size() != 1) {
      fail(where, "field '" + field + ".special_tokens." + name + ".ids' must hold exactly one id");
    }
    return token_id_value(ids[0], where, field + ".special_tokens." + name + ".ids[0]");
  }
  return std::nullopt;
}

std::optional<std::string> config_token(const json& config, const char* key, const std::string& where) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) return jsonf::get_string(*it, "content", where, key);
  fail(where, std::string("field '") + key + "' must be a string or an object with 'content'");
}

std::string config_chat_template(const json& config, const std::string& where) {
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    // A list of named templates: the one named "default" is what apply_chat_template uses.
    for (size_t i = 0; i < it->size(); ++i) {
      std::string field = "chat_template[" + std::to_string(i) + "]";
      if (jsonf::get_string((*it)[i], "name", where, field) == "default") {
        return jsonf::get_string((*it)[i], "template", where, field);
      }
    }
    return {};
  }
  fail(where, "field 'chat_template' must be a string or a list of named templates");
}

}  // namespace

std::shared_ptr<Tokenizer> Tokenizer::from_hf_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  HfTokenizerFiles files;
  files.tokenizer_path = (fs::path(dir) / "tokenizer.json").string();
  files.tokenizer_json = read_file(files.tokenizer_path);
  files.config_path = (fs::path(dir) / "tokenizer_config.json").string();
  if (fs::exists(files.config_path)) files.config_json = read_file(files.config_path);
  const std::string jinja_path = (fs::path(dir) / "chat_template.jinja").string();
  if (fs::exists(jinja_path)) files.chat_template_jinja = read_file(jinja_path);
  return from_hf_files(files);
}

std::shared_ptr<Tokenizer> Tokenizer::from_hf_files(const HfTokenizerFiles& files) {
  const std::string& path = files.tokenizer_path;
  auto impl = std::make_unique<TokenizerImpl>();
  impl->source = path;
  json root = parse_json(files.tokenizer_json, path);
  if (!root.is_object()) fail(path, "the top level must be an object");

  const auto& model = jsonf::require(root, "model", path, "");
  std::string type = model.contains("type") ? jsonf::type_of(model, path, "model") : "BPE";
  if (type != "BPE") fail(path, "model type '" + type + "' is not supported (only BPE is)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    if (it != model.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty())) {
      fail(path, std::string("field 'model.") + key + "' is not supported");
    }
  }
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    fail(path, "field 'model.dropout' is not supported (it makes encoding random)");
  }
  auto vocab = parse_vocab(model, path);
  auto merges = parse_merges(model, vocab, path);
  BpeModel::Options opts;
  opts.byte_fallback = jsonf::get_bool(model, "byte_fallback", false, path, "model");
  opts.ignore_merges = jsonf::get_bool(model, "ignore_merges", false, path, "model");
  opts.fuse_unk = jsonf::get_bool(model, "fuse_unk", false, path, "model");
  impl->added = parse_added(root, path);
  if (auto it = model.find("unk_token"); it != model.end() && !it->is_null()) {
    std::string unk = jsonf::get_string(model, "unk_token", path, "model");
    auto v = vocab.find(unk);
    if (v == vocab.end()) fail(path, "field 'model.unk_token' names '" + unk + "', which is not in model.vocab");
    opts.unk_id = v->second;
  }
  impl->model = std::make_unique<BpeModel>(std::move(vocab), merges, opts);

  auto field_or_null = [&](const char* key) -> const json& {
    static const json null_json;
    auto it = root.find(key);
    return it == root.end() ? null_json : *it;
  };
  impl->normalizer = Normalizer::from_json(field_or_null("normalizer"), path);
  impl->pre_tokenizer = PreTokenizer::from_json(field_or_null("pre_tokenizer"), path);
  impl->decoder = Decoder::from_json(field_or_null("decoder"), path);
  std::optional<int32_t> template_bos = post_processor_bos(field_or_null("post_processor"), path, "post_processor");
  impl->finalize();
  auto lookup = [&](const std::string& token) -> std::optional<int32_t> {
    for (const auto& t : impl->added) if (t.content == token) return t.id;
    return impl->model->find(token);
  };
  if (template_bos && (static_cast<size_t>(*template_bos) >= impl->tokens.size() || !impl->present[*template_bos])) {
    fail(path, "post_processor names token id " + std::to_string(*template_bos) + ", which is not in the vocabulary");
  }
  impl->bos = template_bos;
  impl->add_bos = template_bos.has_value();

  const std::string& config_path = files.config_path;
  if (files.config_json) {
    json config = parse_json(*files.config_json, config_path);
    if (!config.is_object()) fail(config_path, "the top level must be an object");
    auto resolve = [&](const char* key) -> std::optional<int32_t> {
      auto text = config_token(config, key, config_path);
      if (!text) return std::nullopt;
      auto id = lookup(*text);
      if (!id) fail(config_path, std::string("field '") + key + "' names '" + *text + "', which is not a token");
      return id;
    };
    if (auto b = resolve("bos_token")) impl->bos = b;
    impl->eos = resolve("eos_token");
    impl->add_bos = jsonf::get_bool(config, "add_bos_token", impl->add_bos, config_path, "");
    impl->chat_template = config_chat_template(config, config_path);
  }
  if (files.chat_template_jinja) impl->chat_template = *files.chat_template_jinja;
  return std::make_shared<Tokenizer>(std::move(impl));
}

}  // namespace dms
