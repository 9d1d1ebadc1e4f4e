// Typed access to tokenizer.json / tokenizer_config.json fields with errors that name the file
// and the dotted field path ("model.merges[3]").
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "dms/util/error.h"

namespace dms::jsonf {

inline const nlohmann::json& require(const nlohmann::json& obj, const std::string& key,
                                     const std::string& where, const std::string& path) {
  if (!obj.is_object()) fail(where, "field '" + path + "' must be an object");
  auto it = obj.find(key);
  if (it == obj.end()) fail(where, "field '" + (path.empty() ? key : path + "." + key) + "' is missing");
  return *it;
}

inline std::string child(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

inline std::string get_string(const nlohmann::json& obj, const std::string& key,
                              const std::string& where, const std::string& path) {
  const auto& v = require(obj, key, where, path);
  if (!v.is_string()) fail(where, "field '" + child(path, key) + "' must be a string");
  return v.get<std::string>();
}

inline bool get_bool(const nlohmann::json& obj, const std::string& key, bool fallback,
                     const std::string& where, const std::string& path) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail(where, "field '" + child(path, key) + "' must be true or false");
  return it->get<bool>();
}

inline std::string type_of(const nlohmann::json& node, const std::string& where, const std::string& path) {
  return get_string(node, "type", where, path);
}

}  // namespace dms::jsonf
