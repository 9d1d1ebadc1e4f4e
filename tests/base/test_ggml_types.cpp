// ggml type table and dequantize_row against gguf-py: the type table against its
// GGML_QUANT_SIZES, dequantized values against gguf.quants.dequantize of the same bytes
// (fixtures from tests/reference/make_format_fixtures.py).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dms/format/ggml_types.h"
#include "dms/util/error.h"

namespace {

using dms::GgmlType;
using nlohmann::json;

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

GgmlType type_named(const json& manifest, const std::string& name) {
  return static_cast<GgmlType>(manifest.at("ggml_types").at(name).at("id").get<uint32_t>());
}

// Quantized values are (scale * q + min) in fp32. ggml and gguf-py round each product and sum;
// a compiler that fuses them into one FMA differs by at most an ulp of the terms, far below
// this bound, while any layout mistake moves values by a whole quantization step.
float quant_tolerance(const std::vector<float>& expected) {
  float max_abs = 0;
  for (float v : expected) max_abs = std::max(max_abs, std::fabs(v));
  return max_abs * 1e-6f;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, float tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!(std::fabs(got[i] - want[i]) <= tol) && bad++ < 5) {
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", gguf-py " << want[i] << " (tol " << tol << ")";
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << want.size() << " values differ";
}

void expect_same_bits(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    uint32_t g, w;
    std::memcpy(&g, &got[i], 4);
    std::memcpy(&w, &want[i], 4);
    if (g != w && bad++ < 5) ADD_FAILURE() << what << "[" << i << "]: bits " << std::hex << g << " vs " << w;
  }
  EXPECT_EQ(bad, 0u) << what;
}

class GgmlDequantize : public ::testing::Test {
 protected:
  void SetUp() override {
    manifest_ = read_json(formats_dir() + "/all_types.json");
    file_ = read_bytes(formats_dir() + "/all_types.gguf");
  }
  // The tensor's bytes, located by gguf-py's offsets rather than by the GGUF reader under test.
  std::vector<uint8_t> raw(const std::string& name) const {
    const json& t = manifest_.at("tensors").at(name);
    const size_t begin = manifest_.at("data_start").get<size_t>() + t.at("offset").get<size_t>();
    const size_t n = t.at("nbytes").get<size_t>();
    if (begin + n > file_.size()) throw std::runtime_error("fixture all_types.gguf is shorter than its manifest");
    return {file_.begin() + static_cast<ptrdiff_t>(begin), file_.begin() + static_cast<ptrdiff_t>(begin + n)};
  }
  int64_t numel(const std::string& name) const {
    int64_t n = 1;
    for (const json& d : manifest_.at("tensors").at(name).at("ne")) n *= d.get<int64_t>();
    return n;
  }
  json manifest_;
  std::vector<uint8_t> file_;
};

TEST_F(GgmlDequantize, TypeTableMatchesGgufPy) {
  const json& types = manifest_.at("ggml_types");
  for (uint32_t id = 0; id < 64; ++id) {
    std::string py_name;
    for (const auto& [name, t] : types.items()) {
      if (t.at("id").get<uint32_t>() == id) py_name = name;
    }
    const auto type = static_cast<GgmlType>(id);
    EXPECT_EQ(dms::ggml_type_known(id), !py_name.empty()) << "type id " << id;
    if (py_name.empty()) {
      EXPECT_EQ(dms::ggml_type_name(type), "type " + std::to_string(id));
      EXPECT_FALSE(dms::ggml_type_dequantizable(type));
      EXPECT_THROW(dms::ggml_block_elems(type), dms::Error);
      continue;
    }
    EXPECT_EQ(dms::ggml_type_name(type), py_name);
    EXPECT_EQ(dms::ggml_block_elems(type), types.at(py_name).at("block_elems").get<int64_t>()) << py_name;
    EXPECT_EQ(dms::ggml_block_bytes(type), types.at(py_name).at("block_bytes").get<size_t>()) << py_name;
  }
}

TEST_F(GgmlDequantize, RowBytesMatchTensorSizes) {
  for (const auto& [name, t] : manifest_.at("tensors").items()) {
    EXPECT_EQ(dms::ggml_row_bytes(type_named(manifest_, t.at("type")), numel(name)), t.at("nbytes").get<size_t>())
        << name;
  }
}

TEST_F(GgmlDequantize, EveryTypeMatchesGgufPy) {
  int checked = 0;
  for (const auto& [name, t] : manifest_.at("tensors").items()) {
    if (!t.contains("expected")) continue;
    const GgmlType type = type_named(manifest_, t.at("type"));
    ASSERT_TRUE(dms::ggml_type_dequantizable(type)) << name;
    const std::vector<float> want = read_f32(formats_dir() + "/" + t.at("expected").get<std::string>());
    const std::vector<uint8_t> bytes = raw(name);
    std::vector<float> got(static_cast<size_t>(numel(name)));
    dms::dequantize_row(type, bytes.data(), got.data(), numel(name));
    if (dms::ggml_block_elems(type) == 1) {
      // Plain float types convert exactly, NaN payloads and signed zeros included.
      expect_same_bits(got, want, name);
    } else {
      expect_close(got, want, quant_tolerance(want), name);
    }
    ++checked;
  }
  EXPECT_EQ(checked, 15);   // F32, F16 x2, BF16 x2, 5 legacy quants, 5 K-quants
}

TEST_F(GgmlDequantize, RowByRowEqualsWholeTensorFromUnalignedSource) {
  for (const char* name : {"t.Q4_1", "t.Q5_0", "t.Q3_K", "t.Q6_K", "t.F16"}) {
    const json& t = manifest_.at("tensors").at(name);
    const GgmlType type = type_named(manifest_, t.at("type"));
    const std::vector<float> want = read_f32(formats_dir() + "/" + t.at("expected").get<std::string>());
    const std::vector<uint8_t> bytes = raw(name);
    std::vector<uint8_t> shifted(bytes.size() + 1);
    std::memcpy(shifted.data() + 1, bytes.data(), bytes.size());
    const int64_t row = t.at("ne")[0].get<int64_t>();
    const size_t row_bytes = dms::ggml_row_bytes(type, row);
    std::vector<float> got(want.size());
    for (int64_t r = 0; r * row < numel(name); ++r) {
      dms::dequantize_row(type, shifted.data() + 1 + r * row_bytes, got.data() + r * row, row);
    }
    expect_close(got, want, quant_tolerance(want), name);
  }
}

TEST_F(GgmlDequantize, RejectsUnsupportedTypesAndPartialBlocks) {
  std::vector<float> out(256);
  const std::vector<uint8_t> iq = raw("t.IQ2_XXS");
  try {
    dms::dequantize_row(GgmlType::IQ2_XXS, iq.data(), out.data(), 256);
    ADD_FAILURE() << "IQ2_XXS dequantized";
  } catch (const dms::Error& e) {
    EXPECT_NE(std::string(e.what()).find("IQ2_XXS is not supported"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(dms::ggml_type_dequantizable(GgmlType::I32));
  EXPECT_THROW(dms::dequantize_row(GgmlType::I32, iq.data(), out.data(), 4), dms::Error);
  try {
    dms::dequantize_row(GgmlType::Q4_0, iq.data(), out.data(), 33);
    ADD_FAILURE() << "33 Q4_0 elements dequantized";
  } catch (const dms::Error& e) {
    EXPECT_NE(std::string(e.what()).find("33 elements is not a whole number of Q4_0 blocks of 32"),
              std::string::npos) << e.what();
  }
  EXPECT_THROW(dms::dequantize_row(static_cast<GgmlType>(99), iq.data(), out.data(), 1), dms::Error);
  EXPECT_THROW(dms::ggml_row_bytes(static_cast<GgmlType>(31), 32), dms::Error);
}

}  // namespace
