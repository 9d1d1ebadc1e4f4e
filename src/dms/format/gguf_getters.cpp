// GgufFile's typed metadata getters: each failure names the file, the key, and the type found.
#include "dms/format/gguf.h"
#include "dms/format/gguf_value_type.h"
#include "dms/util/error.h"

namespace dms {
namespace {

std::string describe(const GgufValue& v) {
  if (v.type != GgufValueType::ARRAY) return gguf_value_type_name(v.type);
  return "ARRAY of " + gguf_value_type_name(v.array_type);
}

[[noreturn]] void wrong_type(const std::string& path, const std::string& key, const GgufValue& v,
                             const char* expected) {
  fail(path, "metadata '" + key + "' is " + describe(v) + ", expected " + expected);
}

double as_number(const GgufValue& v) {
  if (const auto* i = std::get_if<int64_t>(&v.value)) return static_cast<double>(*i);
  return std::get<double>(v.value);
}

const std::vector<GgufValue>* array_of(const GgufValue& v, bool (*elem_ok)(GgufValueType)) {
  if (v.type != GgufValueType::ARRAY || !elem_ok(v.array_type)) return nullptr;
  return &std::get<std::vector<GgufValue>>(v.value);
}

bool is_number(GgufValueType t) { return gguf_value_type_is_integer(t) || gguf_value_type_is_float(t); }
bool is_string(GgufValueType t) { return t == GgufValueType::STRING; }

}  // namespace

std::optional<std::string> GgufFile::opt_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufValueType::STRING) wrong_type(path(), key, *v, "a string");
  return std::get<std::string>(v->value);
}

std::optional<int64_t> GgufFile::opt_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (!gguf_value_type_is_integer(v->type)) wrong_type(path(), key, *v, "an integer");
  return std::get<int64_t>(v->value);
}

std::optional<double> GgufFile::opt_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (!is_number(v->type)) wrong_type(path(), key, *v, "a number");
  return as_number(*v);
}

std::optional<bool> GgufFile::opt_bool(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufValueType::BOOL) wrong_type(path(), key, *v, "a bool");
  return std::get<bool>(v->value);
}

namespace {

template <typename T>
T required(const std::optional<T>& v, const std::string& path, const std::string& key) {
  if (!v) fail(path, "metadata key '" + key + "' is missing");
  return *v;
}

}  // namespace

std::string GgufFile::get_string(const std::string& key) const { return required(opt_string(key), path(), key); }
int64_t GgufFile::get_int(const std::string& key) const { return required(opt_int(key), path(), key); }
double GgufFile::get_float(const std::string& key) const { return required(opt_float(key), path(), key); }
bool GgufFile::get_bool(const std::string& key) const { return required(opt_bool(key), path(), key); }

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(path(), "metadata key '" + key + "' is missing");
  const auto* elems = array_of(*v, is_string);
  if (!elems) wrong_type(path(), key, *v, "an array of strings");
  std::vector<std::string> out;
  out.reserve(elems->size());
  for (const GgufValue& e : *elems) out.push_back(std::get<std::string>(e.value));
  return out;
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(path(), "metadata key '" + key + "' is missing");
  const auto* elems = array_of(*v, gguf_value_type_is_integer);
  if (!elems) wrong_type(path(), key, *v, "an array of integers");
  std::vector<int64_t> out;
  out.reserve(elems->size());
  for (const GgufValue& e : *elems) out.push_back(std::get<int64_t>(e.value));
  return out;
}

std::vector<double> GgufFile::get_float_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(path(), "metadata key '" + key + "' is missing");
  const auto* elems = array_of(*v, is_number);
  if (!elems) wrong_type(path(), key, *v, "an array of numbers");
  std::vector<double> out;
  out.reserve(elems->size());
  for (const GgufValue& e : *elems) out.push_back(as_number(e));
  return out;
}

}  // namespace dms
