// GgufFile against gguf-py: a file of every metadata type and tensor type written by GGUFWriter,
// the default model as GGUFReader reads it, and malformed copies made by changing bytes of the
// good file (each mutation sits next to the error it must produce).
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dms/format/gguf.h"
#include "dms/util/error.h"

namespace {

using dms::GgufFile;
using dms::GgufValue;
using dms::GgufValueType;
using nlohmann::json;
namespace fs = std::filesystem;

std::string formats_dir() {
  const char* dir = std::getenv("DMS_FIXTURES");
  if (!dir) throw std::runtime_error("DMS_FIXTURES is not set; run tests/reference/make_format_fixtures.py");
  return std::string(dir) + "/formats";
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("missing fixture " + path + "; run tests/reference/make_format_fixtures.py");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<float> read_f32(const std::string& path) {
  const std::vector<uint8_t> bytes = read_bytes(path);
  std::vector<float> out(bytes.size() / sizeof(float));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));
  return out;
}

json read_json(const std::string& path) {
  const std::vector<uint8_t> bytes = read_bytes(path);
  return json::parse(bytes.begin(), bytes.end());
}

GgufValueType value_type_named(const std::string& name) {
  static const char* names[] = {"UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
                                "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};
  for (uint32_t i = 0; i < std::size(names); ++i) {
    if (name == names[i]) return static_cast<GgufValueType>(i);
  }
  throw std::runtime_error("unknown GGUF value type in fixture: " + name);
}

// Compares a parsed value with gguf-py's: `types` is the nesting chain (ARRAY, ARRAY, INT32).
void expect_value(const GgufValue& got, const json& want, const json& types, size_t depth, const std::string& key) {
  const GgufValueType type = value_type_named(types[depth]);
  ASSERT_EQ(got.type, type) << key;
  switch (type) {
    case GgufValueType::STRING: EXPECT_EQ(std::get<std::string>(got.value), want.get<std::string>()) << key; break;
    case GgufValueType::BOOL: EXPECT_EQ(std::get<bool>(got.value), want.get<bool>()) << key; break;
    case GgufValueType::FLOAT32:
    case GgufValueType::FLOAT64: EXPECT_EQ(std::get<double>(got.value), want.get<double>()) << key; break;
    case GgufValueType::ARRAY: {
      EXPECT_EQ(got.array_type, value_type_named(types[depth + 1])) << key;
      const auto& elems = std::get<std::vector<GgufValue>>(got.value);
      ASSERT_EQ(elems.size(), want.size()) << key;
      for (size_t i = 0; i < elems.size(); ++i) expect_value(elems[i], want[i], types, depth + 1, key);
      break;
    }
    default: EXPECT_EQ(std::get<int64_t>(got.value), want.get<int64_t>()) << key; break;
  }
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const dms::Error& e) {
    return e.what();
  }
  return "(no dms::Error thrown)";
}

// Opening `path` must fail with a message naming the file and containing `problem`.
void expect_open_error(const std::string& path, const std::string& problem) {
  const std::string msg = error_of([&] { GgufFile::open(path); });
  EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << "message does not start with the path: " << msg;
  EXPECT_NE(msg.find(problem), std::string::npos) << "expected '" << problem << "' in: " << msg;
}

void put_u32(std::vector<uint8_t>& b, size_t pos, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.at(pos + i) = static_cast<uint8_t>(v >> (8 * i));
}
void put_u64(std::vector<uint8_t>& b, size_t pos, uint64_t v) {
  for (int i = 0; i < 8; ++i) b.at(pos + i) = static_cast<uint8_t>(v >> (8 * i));
}
void append_u32(std::vector<uint8_t>& b, uint32_t v) { b.resize(b.size() + 4); put_u32(b, b.size() - 4, v); }
void append_u64(std::vector<uint8_t>& b, uint64_t v) { b.resize(b.size() + 8); put_u64(b, b.size() - 8, v); }

// Position just after the GGUF string `s` (u64 length + bytes), searching from `from`.
size_t after_string(const std::vector<uint8_t>& b, const std::string& s, size_t from = 0) {
  std::vector<uint8_t> needle(8 + s.size());
  put_u64(needle, 0, s.size());
  std::memcpy(needle.data() + 8, s.data(), s.size());
  const auto it = std::search(b.begin() + static_cast<ptrdiff_t>(from), b.end(), needle.begin(), needle.end());
  if (it == b.end()) throw std::runtime_error("fixture lacks the string '" + s + "'");
  return static_cast<size_t>(it - b.begin()) + needle.size();
}

class GgufAllTypes : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = formats_dir() + "/all_types.gguf";
    manifest_ = read_json(formats_dir() + "/all_types.json");
    bytes_ = read_bytes(path_);
    tmp_ = (fs::temp_directory_path() / ("dms_gguf_test_" + std::to_string(::getpid()) + ".gguf")).string();
  }
  void TearDown() override { fs::remove(tmp_); }

  std::string write_tmp(const std::vector<uint8_t>& b) const {
    std::ofstream(tmp_, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    return tmp_;
  }
  size_t tensor_info_start() const { return manifest_.at("tensor_info_start").get<size_t>(); }
  // Position of the field after a tensor's name: n_dims, then ne[], type, offset.
  size_t tensor_fields(const std::string& name) const { return after_string(bytes_, name, tensor_info_start()); }
  size_t tensor_type_pos(const std::string& name) const {
    const size_t p = tensor_fields(name);
    uint32_t n_dims;
    std::memcpy(&n_dims, &bytes_[p], 4);
    return p + 4 + 8 * n_dims;
  }
  // Position of a metadata value's type field.
  size_t kv_type_pos(const std::string& key) const { return after_string(bytes_, key); }

  std::string path_, tmp_;
  json manifest_;
  std::vector<uint8_t> bytes_;
};

TEST_F(GgufAllTypes, HeaderMatchesGgufPy) {
  const auto g = GgufFile::open(path_);
  EXPECT_EQ(g->path(), path_);
  EXPECT_EQ(g->version(), manifest_.at("version").get<uint32_t>());
  EXPECT_EQ(g->alignment(), manifest_.at("alignment").get<uint32_t>());
  EXPECT_EQ(g->metadata().size(), manifest_.at("metadata").size());
  EXPECT_EQ(g->tensors().size(), manifest_.at("tensors").size());
}

TEST_F(GgufAllTypes, MetadataOfEveryTypeMatchesGgufPy) {
  const auto g = GgufFile::open(path_);
  for (const auto& [key, want] : manifest_.at("metadata").items()) {
    const GgufValue* v = g->find(key);
    ASSERT_NE(v, nullptr) << key;
    expect_value(*v, want.at("value"), want.at("types"), 0, key);
  }
}

TEST_F(GgufAllTypes, TypedGetters) {
  const auto g = GgufFile::open(path_);
  const json& m = manifest_.at("metadata");
  for (const char* key : {"test.uint8", "test.int8", "test.uint16", "test.int16", "test.uint32", "test.int32",
                          "test.uint64", "test.int64"}) {
    EXPECT_EQ(g->get_int(key), m.at(key).at("value").get<int64_t>()) << key;
    EXPECT_EQ(g->get_float(key), m.at(key).at("value").get<double>()) << key;
  }
  EXPECT_EQ(g->get_float("test.float32"), m.at("test.float32").at("value").get<double>());
  EXPECT_EQ(g->get_float("test.float64"), m.at("test.float64").at("value").get<double>());
  EXPECT_TRUE(g->get_bool("test.bool_true"));
  EXPECT_FALSE(g->get_bool("test.bool_false"));
  EXPECT_EQ(g->get_string("test.string"), m.at("test.string").at("value").get<std::string>());
  EXPECT_EQ(g->get_string("general.architecture"), "dmstest");
  EXPECT_EQ(g->get_string_array("test.array.string"),
            m.at("test.array.string").at("value").get<std::vector<std::string>>());
  EXPECT_EQ(g->get_int_array("test.array.uint64"), m.at("test.array.uint64").at("value").get<std::vector<int64_t>>());
  EXPECT_EQ(g->get_int_array("test.array.int16"), m.at("test.array.int16").at("value").get<std::vector<int64_t>>());
  EXPECT_EQ(g->get_float_array("test.array.float32"),
            m.at("test.array.float32").at("value").get<std::vector<double>>());
  EXPECT_EQ(g->get_float_array("test.array.int32"), m.at("test.array.int32").at("value").get<std::vector<double>>());

  EXPECT_EQ(g->opt_int("test.missing"), std::nullopt);
  EXPECT_EQ(g->opt_string("test.missing"), std::nullopt);
  EXPECT_EQ(g->opt_float("test.missing"), std::nullopt);
  EXPECT_EQ(g->opt_bool("test.missing"), std::nullopt);
  EXPECT_EQ(g->opt_int("test.int8"), m.at("test.int8").at("value").get<int64_t>());
  EXPECT_FALSE(g->has("test.missing"));
  EXPECT_TRUE(g->has("test.array.nested_int"));

  auto expect_get_error = [&](const std::function<void()>& f, const std::string& problem) {
    const std::string msg = error_of(f);
    EXPECT_EQ(msg.rfind(path_ + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find(problem), std::string::npos) << "expected '" << problem << "' in: " << msg;
  };
  expect_get_error([&] { g->get_int("test.missing"); }, "metadata key 'test.missing' is missing");
  expect_get_error([&] { g->get_string_array("test.missing"); }, "metadata key 'test.missing' is missing");
  expect_get_error([&] { g->get_int("test.float32"); }, "metadata 'test.float32' is FLOAT32, expected an integer");
  expect_get_error([&] { g->get_int("test.bool_true"); }, "metadata 'test.bool_true' is BOOL, expected an integer");
  expect_get_error([&] { g->get_string("test.uint8"); }, "metadata 'test.uint8' is UINT8, expected a string");
  expect_get_error([&] { g->get_bool("test.uint8"); }, "metadata 'test.uint8' is UINT8, expected a bool");
  expect_get_error([&] { g->get_float("test.string"); }, "metadata 'test.string' is STRING, expected a number");
  expect_get_error([&] { g->opt_int("test.string"); }, "metadata 'test.string' is STRING, expected an integer");
  expect_get_error([&] { g->get_string_array("test.array.int32"); },
                   "metadata 'test.array.int32' is ARRAY of INT32, expected an array of strings");
  expect_get_error([&] { g->get_int_array("test.array.nested_int"); },
                   "metadata 'test.array.nested_int' is ARRAY of ARRAY, expected an array of integers");
  expect_get_error([&] { g->get_float_array("test.string"); }, "expected an array of numbers");
}

TEST_F(GgufAllTypes, TensorDirectoryMatchesGgufPy) {
  const auto g = GgufFile::open(path_);
  const size_t data_start = manifest_.at("data_start").get<size_t>();
  const auto order = manifest_.at("tensor_order").get<std::vector<std::string>>();
  ASSERT_EQ(g->tensors().size(), order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const std::string& name = order[i];
    const json& want = manifest_.at("tensors").at(name);
    const dms::GgufTensorInfo& t = g->tensors()[i];
    EXPECT_EQ(t.name, name);
    EXPECT_EQ(g->find_tensor(name), &t);
    EXPECT_EQ(dms::ggml_type_name(t.type), want.at("type").get<std::string>()) << name;
    const auto ne = want.at("ne").get<std::vector<int64_t>>();
    EXPECT_EQ(t.ne, ne) << name;
    EXPECT_EQ(t.shape, std::vector<int64_t>(ne.rbegin(), ne.rend())) << name;
    int64_t numel = 1;
    for (int64_t n : ne) numel *= n;
    EXPECT_EQ(t.numel, numel) << name;
    EXPECT_EQ(t.offset, want.at("offset").get<uint64_t>()) << name;
    EXPECT_EQ(t.nbytes, want.at("nbytes").get<size_t>()) << name;
    ASSERT_NE(t.data, nullptr);
    EXPECT_EQ(std::memcmp(t.data, bytes_.data() + data_start + t.offset, t.nbytes), 0) << name;
  }
  EXPECT_EQ(g->find_tensor("no.such.tensor"), nullptr);
}

TEST_F(GgufAllTypes, DequantizeMatchesGgufPy) {
  const auto g = GgufFile::open(path_);
  int checked = 0;
  for (const auto& [name, want] : manifest_.at("tensors").items()) {
    if (!want.contains("expected")) continue;
    const dms::GgufTensorInfo& t = *g->find_tensor(name);
    const std::vector<float> ref = read_f32(formats_dir() + "/" + want.at("expected").get<std::string>());
    std::vector<float> got(static_cast<size_t>(t.numel));
    g->dequantize(t, got.data());
    ASSERT_EQ(got.size(), ref.size()) << name;
    float max_abs = 0;
    for (float v : ref) max_abs = std::isfinite(v) ? std::max(max_abs, std::fabs(v)) : max_abs;
    size_t bad = 0;
    for (size_t j = 0; j < ref.size(); ++j) {
      // Plain float types are exact (NaN stays NaN); quantized ones within FMA rounding (see
      // test_ggml_types.cpp), 1e-6 of the tensor's largest value.
      const bool same = std::isnan(ref[j]) ? std::isnan(got[j])
                                           : got[j] == ref[j] || std::fabs(got[j] - ref[j]) <= max_abs * 1e-6f;
      if (!same && bad++ < 3) ADD_FAILURE() << name << "[" << j << "]: " << got[j] << " vs gguf-py " << ref[j];
    }
    ++checked;
  }
  EXPECT_EQ(checked, 15);
}

TEST_F(GgufAllTypes, UnsupportedTypesFailAtDequantizeNamingTheTensor) {
  const auto g = GgufFile::open(path_);
  std::vector<float> out(512);
  for (const auto& [name, type] : {std::pair{"t.IQ2_XXS", "IQ2_XXS"}, std::pair{"t.I32", "I32"}}) {
    const dms::GgufTensorInfo* t = g->find_tensor(name);
    ASSERT_NE(t, nullptr);
    const std::string msg = error_of([&] { g->dequantize(*t, out.data()); });
    EXPECT_NE(msg.find(path_ + ": tensor '" + name + "' has ggml type " + type + ", which cannot be dequantized"),
              std::string::npos) << msg;
  }
}

TEST_F(GgufAllTypes, MissingAndEmptyFiles) {
  expect_open_error(formats_dir() + "/no_such_file.gguf", "cannot open");
  expect_open_error(write_tmp({}), "empty file");
}

TEST_F(GgufAllTypes, TruncatedFiles) {
  auto cut = [&](size_t n) { return write_tmp(std::vector<uint8_t>(bytes_.begin(), bytes_.begin() + static_cast<ptrdiff_t>(n))); };
  expect_open_error(cut(3), "truncated: the GGUF magic");
  expect_open_error(cut(12), "truncated: the tensor count");
  // Inside the metadata, counts and lengths are checked against what remains before reading.
  const std::string n_kv = std::to_string(manifest_.at("metadata").size());
  expect_open_error(cut(40), "metadata count " + n_kv + " cannot fit in a file of 40 bytes");
  expect_open_error(cut(kv_type_pos("test.array.string") + 30),
                    "metadata 'test.array.string': array of 5 STRING elements cannot fit in the 14 bytes that remain");
  expect_open_error(cut(kv_type_pos("test.string") + 10), "truncated: metadata 'test.string' length needs 8 bytes");
  expect_open_error(cut(kv_type_pos("test.string") + 14), "metadata 'test.string' has length");
  expect_open_error(cut(kv_type_pos("test.string") + 14), "but only 2 bytes remain in the file");
  expect_open_error(cut(tensor_info_start() + 10), "tensor #0 name has length 5 but only 2 bytes remain");
  expect_open_error(cut(tensor_info_start() + 20), "truncated: tensor 't.F32' ne[0] needs 8 bytes");
  // The last tensor's data loses its final byte.
  expect_open_error(cut(bytes_.size() - 1), "' data (offset ");
  expect_open_error(cut(bytes_.size() - 1), "extends past the end of the file");
}

TEST_F(GgufAllTypes, BadMagicAndVersions) {
  std::vector<uint8_t> b = bytes_;
  b[3] = 'X';
  expect_open_error(write_tmp(b), "bad magic: not a GGUF file");

  b = bytes_;
  put_u32(b, 4, 1);
  expect_open_error(write_tmp(b), "GGUF version 1 is not supported");
  put_u32(b, 4, 4);
  expect_open_error(write_tmp(b), "unsupported GGUF version 4");
  put_u32(b, 4, 0x03000000);   // a big-endian file's version read little-endian
  expect_open_error(write_tmp(b), "big-endian GGUF is not supported");

  // Version 2 has the same layout as 3 for little-endian files.
  put_u32(b, 4, 2);
  const auto g = GgufFile::open(write_tmp(b));
  EXPECT_EQ(g->version(), 2u);
  EXPECT_EQ(g->tensors().size(), manifest_.at("tensors").size());
}

TEST_F(GgufAllTypes, AbsurdCountsAndLengths) {
  std::vector<uint8_t> b = bytes_;
  put_u64(b, 8, uint64_t{1} << 60);
  expect_open_error(write_tmp(b), "tensor count 1152921504606846976 cannot fit");

  b = bytes_;
  put_u64(b, 16, uint64_t{1} << 60);
  expect_open_error(write_tmp(b), "metadata count 1152921504606846976 cannot fit");

  b = bytes_;
  put_u64(b, 24, uint64_t{1} << 60);   // the first key's length
  expect_open_error(write_tmp(b), "metadata key #0 has length 1152921504606846976 but only");

  b = bytes_;
  put_u64(b, kv_type_pos("test.string") + 4, uint64_t{1} << 60);
  expect_open_error(write_tmp(b), "metadata 'test.string' has length 1152921504606846976");

  b = bytes_;
  put_u64(b, kv_type_pos("test.array.uint8") + 8, uint64_t{1} << 60);   // after value and element types
  expect_open_error(write_tmp(b), "metadata 'test.array.uint8': array of 1152921504606846976 UINT8 elements cannot fit");

  b = bytes_;
  put_u64(b, after_string(b, "t.F16", tensor_info_start()) - 13, uint64_t{1} << 60);   // the name's length
  expect_open_error(write_tmp(b), "tensor #1 name has length 1152921504606846976");
}

TEST_F(GgufAllTypes, BadMetadataValues) {
  std::vector<uint8_t> b = bytes_;
  put_u32(b, kv_type_pos("test.uint8"), 13);
  expect_open_error(write_tmp(b), "metadata 'test.uint8' has unknown value type 13");

  b = bytes_;
  put_u32(b, kv_type_pos("test.array.int32") + 4, 77);
  expect_open_error(write_tmp(b), "metadata 'test.array.int32': unknown array element type 77");

  b = bytes_;
  b.at(kv_type_pos("test.bool_true") + 4) = 2;
  expect_open_error(write_tmp(b), "metadata 'test.bool_true': BOOL byte 2 is neither 0 nor 1");

  b = bytes_;
  put_u64(b, kv_type_pos("test.uint64") + 4, ~uint64_t{0});
  expect_open_error(write_tmp(b), "metadata 'test.uint64': UINT64 value 18446744073709551615 does not fit in int64");

  b = bytes_;
  put_u32(b, kv_type_pos("general.alignment") + 4, 48);
  expect_open_error(write_tmp(b), "general.alignment 48 is not a power of two");
  put_u32(b, kv_type_pos("general.alignment"), static_cast<uint32_t>(GgufValueType::FLOAT32));
  expect_open_error(write_tmp(b), "general.alignment is FLOAT32, not an integer");

  // Two keys of equal length: renaming one to the other duplicates it.
  b = bytes_;
  const size_t key_end = kv_type_pos("test.int16");
  std::memcpy(&b[key_end - 10], "test.uint8", 10);
  expect_open_error(write_tmp(b), "duplicate metadata key 'test.uint8'");
}

TEST_F(GgufAllTypes, DeeplyNestedArraysAreRejected) {
  std::vector<uint8_t> b = {'G', 'G', 'U', 'F'};
  append_u32(b, 3);
  append_u64(b, 0);   // tensors
  append_u64(b, 1);   // metadata pairs
  append_u64(b, 1);
  b.push_back('k');
  append_u32(b, static_cast<uint32_t>(GgufValueType::ARRAY));
  for (int level = 0; level < 20; ++level) {
    append_u32(b, static_cast<uint32_t>(GgufValueType::ARRAY));
    append_u64(b, 1);
  }
  append_u32(b, static_cast<uint32_t>(GgufValueType::UINT8));
  append_u64(b, 1);
  b.push_back(7);
  expect_open_error(write_tmp(b), "metadata 'k': arrays nested more than 16 levels deep");
}

TEST_F(GgufAllTypes, BadTensorInfos) {
  std::vector<uint8_t> b = bytes_;
  put_u32(b, tensor_type_pos("t.Q4_0"), 99);
  expect_open_error(write_tmp(b), "tensor 't.Q4_0' has unknown ggml type 99");

  b = bytes_;
  put_u32(b, tensor_fields("t.Q8_0"), 5);
  expect_open_error(write_tmp(b), "tensor 't.Q8_0' has 5 dimensions (at most 4)");

  b = bytes_;
  put_u64(b, tensor_fields("t.Q8_0") + 4 + 8, 0);   // ne[1]
  expect_open_error(write_tmp(b), "tensor 't.Q8_0' has invalid dimension ne[1] = 0");

  b = bytes_;
  put_u64(b, tensor_fields("t.Q8_0") + 4, ~uint64_t{0});
  expect_open_error(write_tmp(b), "tensor 't.Q8_0' has invalid dimension ne[0] = 18446744073709551615");

  b = bytes_;
  put_u64(b, tensor_fields("t.F32") + 4, uint64_t{1} << 40);
  put_u64(b, tensor_fields("t.F32") + 12, uint64_t{1} << 40);
  expect_open_error(write_tmp(b), "tensor 't.F32' has too many elements");

  b = bytes_;
  put_u64(b, tensor_fields("t.Q4_0") + 4, 95);
  expect_open_error(write_tmp(b), "tensor 't.Q4_0' row length ne[0] = 95 is not a multiple of the Q4_0 block size 32");

  b = bytes_;
  put_u64(b, tensor_fields("t.Q6_K") + 4, 96);   // whole Q4_0-sized rows, not whole Q6_K blocks
  expect_open_error(write_tmp(b), "not a multiple of the Q6_K block size 256");

  b = bytes_;
  std::memcpy(&b[tensor_fields("t.Q5_0") - 6], "t.Q4_0", 6);
  expect_open_error(write_tmp(b), "duplicate tensor name 't.Q4_0'");
}

TEST_F(GgufAllTypes, TensorOffsetsThatLie) {
  const json& tensors = manifest_.at("tensors");
  const size_t offset_pos = tensor_type_pos("t.Q8_0") + 4;

  std::vector<uint8_t> b = bytes_;
  put_u64(b, offset_pos, tensors.at("t.Q8_0").at("offset").get<uint64_t>() + 1);
  expect_open_error(write_tmp(b), "tensor 't.Q8_0' offset " +
                                      std::to_string(tensors.at("t.Q8_0").at("offset").get<uint64_t>() + 1) +
                                      " is not a multiple of the alignment 64");

  b = bytes_;
  put_u64(b, offset_pos, uint64_t{1} << 62);
  expect_open_error(write_tmp(b), "tensor 't.Q8_0' data (offset 4611686018427387904");

  b = bytes_;
  put_u64(b, offset_pos, ~uint64_t{63});   // aligned, and offset + size wraps around 2^64
  expect_open_error(write_tmp(b), "extends past the end of the file");

  b = bytes_;
  put_u64(b, offset_pos, tensors.at("t.Q5_1").at("offset").get<uint64_t>());
  expect_open_error(write_tmp(b), "overlaps the data of tensor");
}

class GgufDefaultModel : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* model = std::getenv("DMS_DEFAULT_MODEL");
    ASSERT_NE(model, nullptr) << "DMS_DEFAULT_MODEL is not set (source scripts/env.sh)";
    path_ = model;
    const std::string manifest = formats_dir() + "/default_model.json";
    ASSERT_TRUE(fs::exists(manifest)) << manifest << " is missing: run tests/reference/make_format_fixtures.py "
                                      << "with DMS_DEFAULT_MODEL pointing at the downloaded model";
    manifest_ = read_json(manifest);
    ASSERT_EQ(manifest_.at("path").get<std::string>(), path_) << "fixture made for another model; regenerate it";
  }
  std::string path_;
  json manifest_;
};

TEST_F(GgufDefaultModel, DirectoryAndMetadataMatchGgufPy) {
  const auto g = GgufFile::open(path_);
  EXPECT_EQ(g->version(), manifest_.at("version").get<uint32_t>());
  EXPECT_EQ(g->alignment(), 32u);
  EXPECT_EQ(g->metadata().size(), manifest_.at("kv_count").get<size_t>());

  const auto order = manifest_.at("tensor_order").get<std::vector<std::string>>();
  ASSERT_EQ(g->tensors().size(), order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const dms::GgufTensorInfo& t = g->tensors()[i];
    const json& want = manifest_.at("tensors").at(order[i]);
    EXPECT_EQ(t.name, order[i]);
    EXPECT_EQ(dms::ggml_type_name(t.type), want.at("type").get<std::string>()) << t.name;
    EXPECT_EQ(t.ne, want.at("ne").get<std::vector<int64_t>>()) << t.name;
    EXPECT_EQ(t.offset, want.at("offset").get<uint64_t>()) << t.name;
    EXPECT_EQ(t.nbytes, want.at("nbytes").get<size_t>()) << t.name;
  }

  for (const auto& [key, want] : manifest_.at("metadata").items()) {
    const GgufValue* v = g->find(key);
    ASSERT_NE(v, nullptr) << key;
    const std::string type = want.at("type");
    if (type == "ARRAY") {
      EXPECT_EQ(v->array_type, value_type_named(want.at("array_type"))) << key;
      const auto& elems = std::get<std::vector<GgufValue>>(v->value);
      const size_t count = want.at("count");
      ASSERT_EQ(elems.size(), count) << key;
      const json& first = want.at("first");
      const json& last = want.at("last");
      const json types = json::array({"ARRAY", want.at("array_type")});
      for (size_t i = 0; i < first.size(); ++i) expect_value(elems[i], first[i], types, 1, key);
      for (size_t i = 0; i < last.size(); ++i) expect_value(elems[count - last.size() + i], last[i], types, 1, key);
    } else {
      expect_value(*v, want.at("value"), json::array({type}), 0, key);
    }
  }
  EXPECT_EQ(g->get_string("general.architecture"), "llama");
  EXPECT_EQ(g->get_string_array("tokenizer.ggml.tokens").size(),
            manifest_.at("metadata").at("tokenizer.ggml.tokens").at("count").get<size_t>());
}

TEST_F(GgufDefaultModel, DequantizedTensorsMatchGgufPy) {
  const auto g = GgufFile::open(path_);
  int checked = 0;
  for (const auto& [name, want] : manifest_.at("tensors").items()) {
    if (!want.contains("expected") && !want.contains("expected_rows")) continue;
    const dms::GgufTensorInfo* t = g->find_tensor(name);
    ASSERT_NE(t, nullptr) << name;
    std::vector<float> all(static_cast<size_t>(t->numel));
    g->dequantize(*t, all.data());
    std::vector<float> got, ref;
    if (want.contains("expected")) {
      got = all;
      ref = read_f32(formats_dir() + "/" + want.at("expected").get<std::string>());
    } else {
      const size_t row = static_cast<size_t>(t->ne[0]);
      for (size_t r : want.at("expected_rows").at("rows").get<std::vector<size_t>>()) {
        got.insert(got.end(), all.begin() + static_cast<ptrdiff_t>(r * row),
                   all.begin() + static_cast<ptrdiff_t>((r + 1) * row));
      }
      ref = read_f32(formats_dir() + "/" + want.at("expected_rows").at("file").get<std::string>());
    }
    ASSERT_EQ(got.size(), ref.size()) << name;
    float max_abs = 0;
    for (float v : ref) max_abs = std::max(max_abs, std::fabs(v));
    size_t bad = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      if (!(std::fabs(got[i] - ref[i]) <= max_abs * 1e-6f) && bad++ < 3) {
        ADD_FAILURE() << name << "[" << i << "]: " << got[i] << " vs gguf-py " << ref[i];
      }
    }
    ++checked;
  }
  EXPECT_EQ(checked, 6);
}

}  // namespace
