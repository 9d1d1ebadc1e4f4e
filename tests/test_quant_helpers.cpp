#include "test_quant_helpers.h"

#include <cmath>
#include <cstring>

namespace dms::test {

using cpu::CpuIsa;

namespace {

double half_value(uint16_t h) {
  const int exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  const double v = exp == 0 ? std::ldexp(mant, -24) : std::ldexp(1024 + mant, exp - 25);
  return (h & 0x8000) ? -v : v;
}

// Scales as they come: mostly ordinary, some zero, some at fp16's extremes (largest, subnormal).
uint16_t random_scale(std::mt19937_64& rng) {
  const uint16_t sign = (rng() & 1) ? 0x8000 : 0;
  const double r = std::uniform_real_distribution<double>(0, 1)(rng);
  if (r < 0.1) return sign;                                       // zero
  if (r < 0.15) return sign | 0x7BFF;                             // 65504
  if (r < 0.2) return sign | static_cast<uint16_t>(1 + rng() % 0x3ff);  // subnormal
  const uint16_t exp = static_cast<uint16_t>(5 + rng() % 13);    // 2^-10 .. 2^2
  return sign | static_cast<uint16_t>(exp << 10) | static_cast<uint16_t>(rng() % 0x400);
}

// A finite 16-bit float: fp16 anywhere in its range (subnormals included); bf16 within 2^+-20
// so that sums stay far from fp32 overflow.
uint16_t random_16_bit(GgmlType t, std::mt19937_64& rng) {
  const uint16_t sign = (rng() & 1) ? 0x8000 : 0;
  if (t == GgmlType::F16) return sign | static_cast<uint16_t>(rng() % (0x1f * 0x400));
  return sign | static_cast<uint16_t>((107 + rng() % 41) << 7) | static_cast<uint16_t>(rng() % 0x80);
}

}  // namespace

const std::vector<TypeSpec>& type_specs() {
  static const std::vector<TypeSpec> specs = {
      {GgmlType::Q4_0, {0}, 15 + 8},        {GgmlType::Q4_1, {0, 2}, 15},        {GgmlType::Q5_0, {0}, 31 + 16},
      {GgmlType::Q5_1, {0, 2}, 31},         {GgmlType::Q8_0, {0}, 128},          {GgmlType::Q2_K, {80, 82}, 15 * 3},
      {GgmlType::Q3_K, {108}, 32 * (7 + 4)}, {GgmlType::Q4_K, {0, 2}, 63 * 15},  {GgmlType::Q5_K, {0, 2}, 63 * 31},
      {GgmlType::Q6_K, {208}, 128 * (63 + 32)}, {GgmlType::F16, {}, 1},          {GgmlType::BF16, {}, 1},
  };
  return specs;
}

bool is_16_bit(GgmlType t) { return t == GgmlType::F16 || t == GgmlType::BF16; }

Weights random_weights(const TypeSpec& spec, int64_t rows, int64_t cols, std::mt19937_64& rng) {
  Weights w;
  const size_t row_bytes = dms::ggml_row_bytes(spec.type, cols);
  w.bytes.resize(rows * row_bytes);
  for (auto& b : w.bytes) b = static_cast<uint8_t>(rng());
  const int64_t block = dms::ggml_block_elems(spec.type);
  const size_t block_bytes = dms::ggml_block_bytes(spec.type);
  w.bound.resize(rows * cols);
  for (int64_t i = 0; i < rows * cols / block; ++i) {
    uint8_t* blk = w.bytes.data() + i * block_bytes;
    double fields = 0;
    for (int off : spec.half_fields) {
      const uint16_t h = random_scale(rng);
      std::memcpy(blk + off, &h, 2);
      fields += std::fabs(half_value(h));
    }
    if (is_16_bit(spec.type)) {
      const uint16_t h = random_16_bit(spec.type, rng);
      std::memcpy(blk, &h, 2);
    }
    for (int64_t j = 0; j < block; ++j) w.bound[i * block + j] = spec.coef * fields;
  }
  w.values.resize(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    dms::dequantize_row(spec.type, w.bytes.data() + r * row_bytes, w.values.data() + r * cols, cols);
  if (is_16_bit(spec.type))
    for (int64_t i = 0; i < rows * cols; ++i) w.bound[i] = std::fabs(w.values[i]);
  w.matrix = {spec.type, rows, cols, w.bytes.data()};
  return w;
}

std::vector<float> random_activations(int64_t n, int64_t cols, std::mt19937_64& rng) {
  std::vector<float> x(n * cols);
  std::normal_distribution<float> normal(0, 1);
  std::uniform_real_distribution<float> unit(0, 1);
  for (int64_t b = 0; b < n * cols; b += 32) {
    const float scale = unit(rng) < 0.05f ? 0.0f : std::pow(10.0f, unit(rng) * 4 - 3);
    for (int64_t j = b; j < std::min(b + 32, n * cols); ++j)
      x[j] = normal(rng) * scale * (unit(rng) < 0.01f ? 100.0f : 1.0f);
  }
  return x;
}

std::vector<CpuIsa> supported_isas() {
  std::vector<CpuIsa> isas;
  for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512})
    if (dms::cpu::cpu_isa_supported(isa)) isas.push_back(isa);
  return isas;
}

PackedCopy packed(const Weights& w) {
  PackedCopy p{std::vector<uint8_t>(w.bytes.size()), w.matrix};
  dms::cpu::quant_pack(w.matrix, p.bytes.data());
  p.matrix.data = p.bytes.data();
  p.matrix.packed = true;
  return p;
}

bool packs(const TypeSpec& spec) { return dms::cpu::quant_pack_supports(spec.type); }

}  // namespace dms::test
