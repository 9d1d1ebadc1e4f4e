// safetensors reader against files written by the Python safetensors package (expected bytes
// are the source tensors' own bytes), checkpoint directories single and sharded, malformed
// files built next to the error they must produce, and the writer's output format.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dms/format/safetensors.h"
#include "dms/util/error.h"

namespace {

using dms::SafetensorsCheckpoint;
using dms::SafetensorsFile;
using dms::StDtype;
using dms::StTensor;
using nlohmann::json;
using StringMap = std::map<std::string, std::string>;
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

json read_json(const std::string& path) {
  const std::vector<uint8_t> bytes = read_bytes(path);
  return json::parse(bytes.begin(), bytes.end());
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// A safetensors file from a header text and data bytes, for the malformed cases.
std::vector<uint8_t> st_bytes(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> b;
  b.reserve(8 + header.size() + data.size());
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i)));
  b.insert(b.end(), header.begin(), header.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const dms::Error& e) {
    return e.what();
  }
  return "(no dms::Error thrown)";
}

void expect_error(const std::function<void()>& f, const std::string& where, const std::string& problem) {
  const std::string msg = error_of(f);
  EXPECT_EQ(msg.rfind(where + ": ", 0), 0u) << "message does not start with '" << where << "': " << msg;
  EXPECT_NE(msg.find(problem), std::string::npos) << "expected '" << problem << "' in: " << msg;
}

void expect_tensor(const StTensor& t, const json& want, const std::string& expected_bytes_path) {
  EXPECT_EQ(dms::st_dtype_name(t.dtype), want.at("dtype").get<std::string>()) << t.name;
  EXPECT_EQ(t.shape, want.at("shape").get<std::vector<int64_t>>()) << t.name;
  const std::vector<uint8_t> expected = read_bytes(expected_bytes_path);
  ASSERT_EQ(t.nbytes, expected.size()) << t.name;
  EXPECT_TRUE(t.nbytes == 0 || std::memcmp(t.data, expected.data(), t.nbytes) == 0) << t.name << ": bytes differ";
}

class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = fs::temp_directory_path() / ("dms_st_test_" + std::to_string(::getpid()));
    fs::remove_all(tmp_);
    fs::create_directories(tmp_);
  }
  void TearDown() override { fs::remove_all(tmp_); }
  std::string tmp(const std::string& name) const { return (tmp_ / name).string(); }
  fs::path tmp_;
};

TEST_F(Safetensors, EveryDtypeMatchesPythonSafetensors) {
  const json manifest = read_json(formats_dir() + "/dtypes.json");
  const std::string path = formats_dir() + "/dtypes.safetensors";
  const auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->path(), path);
  EXPECT_EQ(f->metadata(), manifest.at("metadata").get<StringMap>());
  ASSERT_EQ(f->tensors().size(), manifest.at("tensors").size());
  for (const auto& [name, want] : manifest.at("tensors").items()) {
    const auto it = f->tensors().find(name);
    ASSERT_NE(it, f->tensors().end()) << name;
    EXPECT_EQ(it->second.name, name);
    EXPECT_EQ(it->second.file, path);
    expect_tensor(it->second, want, formats_dir() + "/" + want.at("expected").get<std::string>());
    int64_t numel = 1;
    for (int64_t d : it->second.shape) numel *= d;
    EXPECT_EQ(dms::st_dtype_size(it->second.dtype) * static_cast<size_t>(numel), it->second.nbytes) << name;
  }
}

TEST_F(Safetensors, SingleAndShardedCheckpointsMatch) {
  const json manifest = read_json(formats_dir() + "/checkpoint.json");
  for (const char* dir : {"single", "sharded"}) {
    const std::string path = formats_dir() + "/" + dir;
    const SafetensorsCheckpoint c = SafetensorsCheckpoint::open_dir(path);
    ASSERT_EQ(c.tensors().size(), manifest.size()) << dir;
    for (const auto& [name, want] : manifest.items()) {
      const StTensor* t = c.find(name);
      ASSERT_NE(t, nullptr) << dir << " " << name;
      expect_tensor(*t, want, formats_dir() + "/" + want.at("expected").get<std::string>());
      const std::string file = std::string(dir) == "single" ? "model.safetensors" : want.at("shard").get<std::string>();
      EXPECT_EQ(fs::path(t->file).filename().string(), file) << name;
    }
    EXPECT_EQ(c.find("no.such.tensor"), nullptr);
  }
}

TEST_F(Safetensors, MissingTruncatedAndOversizedHeaders) {
  const std::string missing = tmp("missing.safetensors");
  expect_error([&] { SafetensorsFile::open(missing); }, missing, "cannot open");

  const std::string p = tmp("bad.safetensors");
  write_bytes(p, {1, 0, 0});
  expect_error([&] { SafetensorsFile::open(p); }, p, "truncated: 3 bytes is too short for the 8-byte header length");

  write_bytes(p, st_bytes("{}", {}));
  auto b = read_bytes(p);
  b[0] = 200;   // header length 200, but only 2 bytes follow
  write_bytes(p, b);
  expect_error([&] { SafetensorsFile::open(p); }, p, "header length 200 exceeds the 2 bytes after it");

  // A good file cut inside its data: the last tensor's offsets now pass the end.
  b = read_bytes(formats_dir() + "/dtypes.safetensors");
  b.resize(b.size() - 3);
  write_bytes(p, b);
  expect_error([&] { SafetensorsFile::open(p); }, p, "extend past the end of the data");

  // Cut inside the header.
  b.resize(20);
  write_bytes(p, b);
  expect_error([&] { SafetensorsFile::open(p); }, p, "exceeds the 12 bytes after it");
}

TEST_F(Safetensors, InvalidHeaders) {
  const std::string p = tmp("bad.safetensors");
  auto expect_header_error = [&](const std::string& header, const std::vector<uint8_t>& data, const std::string& problem) {
    write_bytes(p, st_bytes(header, data));
    expect_error([&] { SafetensorsFile::open(p); }, p, problem);
  };
  const std::vector<uint8_t> data(16, 7);
  expect_header_error(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8])", data, "invalid JSON header");
  expect_header_error(R"([1, 2])", data, "JSON header is not an object");
  expect_header_error(R"({"a": 3})", data, "tensor 'a' entry is not a JSON object");
  expect_header_error(R"({"a": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}})", data,
                      "tensor 'a' has unsupported dtype 'F8_E4M3'");
  expect_header_error(R"({"a": {"dtype": "NOPE", "shape": [2], "data_offsets": [0, 2]}})", data,
                      "tensor 'a' has unsupported dtype 'NOPE'");
  expect_header_error(R"({"a": {"shape": [2], "data_offsets": [0, 8]}})", data, "tensor 'a' has no string 'dtype'");
  expect_header_error(R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", data,
                      "tensor 'a' shape dimension must be a non-negative integer, got -2");
  expect_header_error(R"({"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})", data,
                      "must be a non-negative integer, got 2.5");
  expect_header_error(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})", data,
                      "tensor 'a' has no 'data_offsets' pair");
  expect_header_error(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 24]}})", data,
                      "tensor 'a' data_offsets [8,24] extend past the end of the data (16 bytes)");
  expect_header_error(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", data,
                      "tensor 'a' data_offsets [8,0] end before they begin");
  expect_header_error(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", data,
                      "tensor 'a' data_offsets [0,8] span 8 bytes but shape [3] of F32 needs 12");
  expect_header_error(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})", data,
                      "has too many elements");
  expect_header_error(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                          "b": {"dtype": "F16", "shape": [4], "data_offsets": [4, 12]}})",
                      data, "tensor 'b' overlaps the data of tensor 'a'");
  expect_header_error(R"({"__metadata__": {"k": 1}})", data, "__metadata__ value 'k' is not a string");
  expect_header_error(R"({"__metadata__": [1]})", data, "__metadata__ is not a JSON object");

  // The same header with valid offsets opens, so each failure above is the field it names.
  write_bytes(p, st_bytes(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                               "b": {"dtype": "F16", "shape": [4], "data_offsets": [8, 16]}})", data));
  EXPECT_EQ(SafetensorsFile::open(p)->tensors().size(), 2u);
}

class ShardedCopy : public Safetensors {
 protected:
  void SetUp() override {
    Safetensors::SetUp();
    dir_ = tmp("sharded");
    fs::copy(formats_dir() + "/sharded", dir_);
    index_path_ = dir_ + "/model.safetensors.index.json";
    index_ = read_json(index_path_);
  }
  void write_index() const {
    std::ofstream(index_path_) << index_.dump();
  }
  std::string dir_, index_path_;
  json index_;
};

TEST_F(ShardedCopy, IndexNamingAMissingShard) {
  index_["weight_map"]["model.norm.weight"] = "model-00003-of-00002.safetensors";
  write_index();
  expect_error([&] { SafetensorsCheckpoint::open_dir(dir_); }, index_path_,
               "shard 'model-00003-of-00002.safetensors' (for tensor 'model.norm.weight') does not exist");
}

TEST_F(ShardedCopy, IndexNamingATensorTheShardLacks) {
  const std::string first_shard = index_.at("weight_map").at("model.embed_tokens.weight");
  index_["weight_map"]["model.norm.weight"] = first_shard;
  write_index();
  expect_error([&] { SafetensorsCheckpoint::open_dir(dir_); }, index_path_,
               "tensor 'model.norm.weight' is mapped to shard '" + first_shard + "', which does not contain it");
}

TEST_F(ShardedCopy, IndexProblems) {
  index_["weight_map"]["model.norm.weight"] = "../model.safetensors";
  write_index();
  expect_error([&] { SafetensorsCheckpoint::open_dir(dir_); }, index_path_, "names '../model.safetensors', which is not a file name");

  index_["weight_map"]["model.norm.weight"] = 3;
  write_index();
  expect_error([&] { SafetensorsCheckpoint::open_dir(dir_); }, index_path_, "weight_map entry for 'model.norm.weight' is not a string");

  index_.erase("weight_map");
  write_index();
  expect_error([&] { SafetensorsCheckpoint::open_dir(dir_); }, index_path_, "has no 'weight_map' object");

  std::ofstream(index_path_) << "{not json";
  expect_error([&] { SafetensorsCheckpoint::open_dir(dir_); }, index_path_, "invalid JSON");
}

TEST_F(ShardedCopy, BrokenShardIsReportedByItsPath) {
  const std::string shard = dir_ + "/" + index_.at("weight_map").at("model.norm.weight").get<std::string>();
  auto b = read_bytes(shard);
  b.resize(b.size() / 2);
  write_bytes(shard, b);
  const std::string msg = error_of([&] { SafetensorsCheckpoint::open_dir(dir_); });
  EXPECT_EQ(msg.rfind(shard + ": ", 0), 0u) << msg;
}

TEST_F(Safetensors, EmptyDirectory) {
  expect_error([&] { SafetensorsCheckpoint::open_dir(tmp_.string()); }, tmp_.string(),
               "no model.safetensors or model.safetensors.index.json");
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> b(n);
  for (uint8_t& x : b) {
    seed = seed * 1664525u + 1013904223u;
    x = static_cast<uint8_t>(seed >> 24);
  }
  return b;
}

TEST_F(Safetensors, WriterProducesAlignedReadableFiles) {
  const std::vector<dms::StTensorOut> tensors = {
      {"w.bf16", StDtype::BF16, {3, 5}, random_bytes(30, 1)},
      {"w.f32", StDtype::F32, {7}, random_bytes(28, 2)},
      {"w.i64", StDtype::I64, {2, 1, 2}, random_bytes(32, 3)},
      {"w.bool", StDtype::BOOL, {3}, {1, 0, 1}},
      {"w.empty", StDtype::F16, {0, 4}, {}},
  };
  const StringMap metadata = {{"format", "pt"}, {"step", "12"}};
  const std::string p = tmp("out.safetensors");
  dms::save_safetensors(p, tensors, metadata);
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp_), fs::directory_iterator()), 1) << "temporary file left behind";

  // The raw layout, read without the reader under test.
  const std::vector<uint8_t> raw = read_bytes(p);
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(raw[i]) << (8 * i);
  EXPECT_EQ((8 + header_len) % 8, 0u) << "data must start 8-byte aligned";
  const json header = json::parse(raw.begin() + 8, raw.begin() + 8 + static_cast<ptrdiff_t>(header_len));
  EXPECT_EQ(header.at("__metadata__").get<StringMap>(), metadata);
  size_t total = 0;
  for (const dms::StTensorOut& t : tensors) {
    const json& h = header.at(t.name);
    EXPECT_EQ(h.at("dtype"), dms::st_dtype_name(t.dtype));
    EXPECT_EQ(h.at("shape").get<std::vector<int64_t>>(), t.shape);
    const auto off = h.at("data_offsets").get<std::vector<size_t>>();
    ASSERT_EQ(off.size(), 2u);
    ASSERT_EQ(off[1] - off[0], t.bytes.size());
    EXPECT_TRUE(std::equal(t.bytes.begin(), t.bytes.end(), raw.begin() + static_cast<ptrdiff_t>(8 + header_len + off[0])))
        << t.name;
    total += t.bytes.size();
  }
  EXPECT_EQ(raw.size(), 8 + header_len + total);

  // And through the reader; a second save replaces the file in place.
  const auto f = SafetensorsFile::open(p);
  EXPECT_EQ(f->metadata(), metadata);
  for (const dms::StTensorOut& t : tensors) {
    const StTensor& r = f->tensors().at(t.name);
    EXPECT_EQ(r.dtype, t.dtype);
    EXPECT_EQ(r.shape, t.shape);
    ASSERT_EQ(r.nbytes, t.bytes.size());
    EXPECT_TRUE(t.bytes.empty() || std::memcmp(r.data, t.bytes.data(), r.nbytes) == 0) << t.name;
  }
  dms::save_safetensors(p, {tensors[1]});
  EXPECT_EQ(SafetensorsFile::open(p)->tensors().size(), 1u);
  EXPECT_TRUE(SafetensorsFile::open(p)->metadata().empty());
}

TEST_F(Safetensors, WriterPadsEveryHeaderLengthToEightBytes) {
  // Names of eight consecutive lengths give eight header lengths modulo 8.
  const std::string p = tmp("pad.safetensors");
  for (int extra = 0; extra < 8; ++extra) {
    std::string name = "t";
    name.append(static_cast<size_t>(extra), 'x');
    dms::save_safetensors(p, {{name, StDtype::U8, {3}, {1, 2, 3}}});
    const std::vector<uint8_t> raw = read_bytes(p);
    ASSERT_GE(raw.size(), 8u);
    uint64_t header_len = 0;
    for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(raw[i]) << (8 * i);
    EXPECT_EQ(header_len % 8, 0u) << "name length " << 1 + extra;
    EXPECT_EQ(SafetensorsFile::open(p)->tensors().size(), 1u);
  }
}

TEST_F(Safetensors, WriterRejectsBadInput) {
  const std::string p = tmp("out.safetensors");
  expect_error([&] { dms::save_safetensors(p, {{"a", StDtype::F32, {3}, random_bytes(8, 1)}}); }, p,
               "tensor 'a' has 8 bytes but its shape of F32 needs 12");
  expect_error([&] {
    dms::save_safetensors(p, {{"a", StDtype::U8, {1}, {1}}, {"a", StDtype::U8, {1}, {2}}});
  }, p, "duplicate tensor name 'a'");
  expect_error([&] { dms::save_safetensors(p, {{"__metadata__", StDtype::U8, {1}, {1}}}); }, p,
               "'__metadata__' is reserved");
  const std::string nowhere = tmp("no/such/dir/out.safetensors");
  expect_error([&] { dms::save_safetensors(nowhere, {{"a", StDtype::U8, {1}, {1}}}); }, nowhere, "cannot create");
  EXPECT_FALSE(fs::exists(p));
}

}  // namespace
