// dms::cpu::quant_matmul and quant_row against dms::dequantize_row (the format's own dequantizer)
// and an fp64 matmul, on random blocks, for every type and every ISA level this CPU runs; and the
// batched path's per-ISA dequantizers against dms::dequantize_row, bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dms/format/ggml_types.h"
#include "dms/kernels/cpu/quant_blocks.h"
#include "dms/kernels/cpu/quant_matmul.h"
#include "dms/util/error.h"

namespace {

using dms::GgmlType;
using dms::cpu::CpuIsa;
using dms::cpu::QuantMatrix;
using dms::cpu::Activations;
using dms::cpu::QuantPath;

constexpr double kEps = 0x1p-24;  // fp32 unit roundoff

// Where a type's fp16 scale fields are in a block (the test writes chosen values there; every
// other byte is random), and a bound `coef` on the integer factor any float term of the kernels
// carries per element: max |sub-scale| * (max level + offset), e.g. Q4_K 63 * 15, Q4_0 15 + 8
// (levels and offsets may be summed separately). Times the sum of |fields| of the element's block,
// it bounds every partial product a kernel forms for that element.
struct TypeSpec {
  GgmlType type;
  std::vector<int> half_fields;
  double coef;
};

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

struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // dequantize_row of every row
  std::vector<double> bound;  // per element: coef * sum of |scale fields| of its block
  QuantMatrix matrix;
};

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

// Activations with magnitudes varying by block (10^-3 .. 10), some all-zero blocks, some outliers.
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

// The types whose SIMD decode kernels quantize the activations to 16 bits per 32 elements.
bool quantizes_activations(GgmlType t, CpuIsa isa) {
  const bool int_type = t == GgmlType::Q4_0 || t == GgmlType::Q4_1 || t == GgmlType::Q5_0 || t == GgmlType::Q5_1 ||
                        t == GgmlType::Q8_0 || t == GgmlType::Q4_K || t == GgmlType::Q6_K;
  return int_type && isa != CpuIsa::Scalar;
}

// Per output: the fp64 product of the dequantized weights and the activations, and the error the
// kernel may make.
//
// Decode path with fp32 activations: the kernels dequantize each weight in registers (level times
// the block's scale, or scale times sub-scale, plus min) with at most three fp32 roundings, and
// dequantize_row's own value w carries as many, so the weight a kernel uses is within
// 6 eps * bound_j of w (bound_j >= every partial term of the element, see TypeSpec). The products
// are then summed in fp32 in some order (FMA or multiply-add, lanes and accumulators, a horizontal
// sum): at most (cols + 1) eps * sum |w x| to first order for any order. Hence (cols + 16) eps *
// sum_j bound_j |x_j|, with 9 eps of margin for second-order terms. The 16-bit weights are exact
// in fp32: only the sum's rounding, (cols + 8) eps * sum |w x|.
//
// Decode path with 16-bit activations: x_j is replaced by q_j * s, s = m / 32767 with m the
// largest |x| of its 32-element block and q_j = round(x_j / s) computed as round(x_j * fl(32767 / m)):
// |q_j s - x_j| <= s / 2 plus the rounding of the reciprocal and of s (under 2^-9 s in all), so
// <= 0.51 s, and the kernel computes sum_j w_j q_j s (the constant terms too multiply the
// quantized values): sum_j |w_j| 0.51 s off the exact product. The fp32 arithmetic that follows
// (the integer sum's conversion, scale times step, the FMA and the sums) is the fp32 bound above
// with |x_j| + 0.51 s for |x_j|: (cols + 16) eps * sum_j bound_j (|x_j| + 0.51 s) + sum_j |w_j| 0.51 s.
//
// Batched path: dequantize_row's values, then an fp32 GEMM in any order: cols * eps * sum |w x|
// (with a 1% margin on the first-order bound).
struct Expected {
  std::vector<double> y, tol;
};

enum class Path { Float, Int16, Batched };

Path path_of(const TypeSpec& spec, CpuIsa isa, QuantPath path, int64_t n) {
  const bool batched = path == QuantPath::Batched || (path == QuantPath::Auto && n >= dms::cpu::kBatchedMinRows);
  if (batched) return Path::Batched;
  return quantizes_activations(spec.type, isa) ? Path::Int16 : Path::Float;
}

Expected reference(const TypeSpec& spec, const Weights& w, const std::vector<float>& x, int64_t n, Path path) {
  const int64_t rows = w.matrix.rows, cols = w.matrix.cols;
  Expected e{std::vector<double>(n * rows), std::vector<double>(n * rows)};
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x.data() + t * cols;
    std::vector<double> half_step(cols, 0.0);  // 0.51 s of each element's block
    if (path == Path::Int16) {
      for (int64_t j0 = 0; j0 < cols; j0 += 32) {
        double m = 0;
        for (int64_t j = j0; j < j0 + 32; ++j) m = std::max(m, std::fabs(static_cast<double>(xt[j])));
        for (int64_t j = j0; j < j0 + 32; ++j) half_step[j] = 0.51 * m / 32767;
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float* wr = w.values.data() + r * cols;
      const double* br = w.bound.data() + r * cols;
      double sum = 0, abs_sum = 0, terms = 0, step_error = 0;
      for (int64_t j = 0; j < cols; ++j) {
        sum += static_cast<double>(wr[j]) * xt[j];
        abs_sum += std::fabs(static_cast<double>(wr[j]) * xt[j]);
        terms += br[j] * (std::fabs(xt[j]) + half_step[j]);
        step_error += std::fabs(static_cast<double>(wr[j])) * half_step[j];
      }
      double tol;
      if (path == Path::Batched) tol = 1.01 * static_cast<double>(cols) * kEps * abs_sum;
      else if (is_16_bit(spec.type)) tol = static_cast<double>(cols + 8) * kEps * abs_sum;
      else tol = static_cast<double>(cols + 16) * kEps * terms + step_error;
      e.y[t * rows + r] = sum;
      e.tol[t * rows + r] = tol;
    }
  }
  return e;
}

std::vector<CpuIsa> supported_isas() {
  std::vector<CpuIsa> isas;
  for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512})
    if (dms::cpu::cpu_isa_supported(isa)) isas.push_back(isa);
  return isas;
}

std::vector<int64_t> test_cols(GgmlType t) {
  if (is_16_bit(t)) return {1, 15, 16, 17, 100};  // the SIMD loops' tails
  const int64_t block = dms::ggml_block_elems(t);
  return block == 32 ? std::vector<int64_t>{32, 96, 576} : std::vector<int64_t>{256, 768};
}

// w's matrix packed by quant_pack, in storage of its own.
struct PackedCopy {
  std::vector<uint8_t> bytes;
  QuantMatrix matrix;
};

PackedCopy packed(const Weights& w) {
  PackedCopy p{std::vector<uint8_t>(w.bytes.size()), w.matrix};
  dms::cpu::quant_pack(w.matrix, p.bytes.data());
  p.matrix.data = p.bytes.data();
  p.matrix.packed = true;
  return p;
}

bool packs(const TypeSpec& spec) { return dms::cpu::quant_pack_supports(spec.type); }

// The weights in the row layout, or packed (quant_pack); the activations the decode path uses.
void check(const TypeSpec& spec, CpuIsa isa, QuantPath path, int64_t rows, int64_t cols, int64_t n, uint64_t seed,
           bool pack = false, Activations activations = Activations::Int16) {
  std::mt19937_64 rng(seed);
  const Weights w = random_weights(spec, rows, cols, rng);
  const PackedCopy p = pack ? packed(w) : PackedCopy{};
  const std::vector<float> x = random_activations(n, cols, rng);
  std::vector<float> y(n * rows, std::nanf(""));
  dms::cpu::quant_matmul(pack ? p.matrix : w.matrix, x.data(), n, y.data(), {isa, path, activations});
  Path expected = path_of(spec, isa, path, n);
  if (expected == Path::Int16 && activations == Activations::Float) expected = Path::Float;
  const Expected e = reference(spec, w, x, n, expected);
  for (int64_t i = 0; i < n * rows; ++i) {
    ASSERT_LE(std::fabs(y[i] - e.y[i]), e.tol[i])
        << dms::ggml_type_name(spec.type) << " " << dms::cpu::cpu_isa_name(isa)
        << (path == QuantPath::Batched ? " batched" : " decode") << (pack ? " packed" : "") << " rows " << rows
        << " cols " << cols << " n " << n << " output " << i << ": " << y[i] << " vs " << e.y[i];
  }
}

TEST(QuantMatmul, DecodePathEveryTypeAndIsa) {
  uint64_t seed = 1;
  for (const TypeSpec& spec : type_specs())
    for (CpuIsa isa : supported_isas())
      for (int64_t cols : test_cols(spec.type))
        for (int64_t rows : {1, 7, 33})
          for (int64_t n : {1, 2, 3, 4, 5, 6, 7, 8, 9, 17}) check(spec, isa, QuantPath::Decode, rows, cols, n, ++seed);
}

// Packed matrices (whole groups of 16 rows) on the decode path: the packed kernels with 16-bit
// and with fp32 activations, and on the scalar ISA the row kernels on unpacked rows.
TEST(QuantMatmul, DecodePathPackedEveryIsa) {
  uint64_t seed = 500;
  for (const TypeSpec& spec : type_specs()) {
    if (!packs(spec)) continue;
    for (CpuIsa isa : supported_isas())
      for (int64_t cols : test_cols(spec.type))
        for (int64_t rows : {16, 48})
          for (int64_t n : {1, 2, 3, 4, 5, 6, 7, 8, 9, 17}) {
            check(spec, isa, QuantPath::Decode, rows, cols, n, ++seed, true);
            if (n <= 5 || n == 9) check(spec, isa, QuantPath::Decode, rows, cols, n, ++seed, true, Activations::Float);
          }
  }
}

// On the scalar dequantizer (dms::dequantize_row) and the best ISA's (the default); the others
// give the same bits (DequantizerIsDequantizeRowBitForBit).
TEST(QuantMatmul, BatchedPathEveryType) {
  uint64_t seed = 1000;
  std::vector<CpuIsa> isas = {CpuIsa::Scalar};
  if (supported_isas().back() != CpuIsa::Scalar) isas.push_back(supported_isas().back());
  for (const TypeSpec& spec : type_specs())
    for (CpuIsa isa : isas)
      for (int64_t cols : test_cols(spec.type))
        for (int64_t rows : {1, 7, 33, 300})
          for (int64_t n : {1, 5, 16, 64}) check(spec, isa, QuantPath::Batched, rows, cols, n, ++seed);
}

// Packed: the column-major tiles of the packed dequantizers (the scalar ISA's go a row at a time),
// 912 rows of 576 being two tiles.
TEST(QuantMatmul, BatchedPathPacked) {
  uint64_t seed = 1500;
  for (const TypeSpec& spec : type_specs()) {
    if (!packs(spec)) continue;
    for (CpuIsa isa : supported_isas())
      for (int64_t cols : test_cols(spec.type))
        for (int64_t rows : {16, 48, 912})
          for (int64_t n : {1, 5, 64}) {
            if (rows == 912 && cols != 576) continue;
            check(spec, isa, QuantPath::Batched, rows, cols, n, ++seed, true);
          }
  }
}

// quant_pack moves bytes: every row comes back as it was, and the packed matrix holds as many bytes.
// What it cannot pack it refuses.
TEST(QuantMatmul, PackedRowsUnpackToTheirBytes) {
  uint64_t seed = 1700;
  for (const TypeSpec& spec : type_specs()) {
    if (!packs(spec)) continue;
    std::mt19937_64 rng(++seed);
    const int64_t rows = 32, cols = 96;
    const Weights w = random_weights(spec, rows, cols, rng);
    ASSERT_TRUE(dms::cpu::quant_packable(w.matrix));
    const PackedCopy p = packed(w);
    EXPECT_NE(p.bytes, w.bytes) << dms::ggml_type_name(spec.type);
    const size_t row_bytes = dms::ggml_row_bytes(spec.type, cols);
    std::vector<uint8_t> row(row_bytes);
    for (int64_t r = 0; r < rows; ++r) {
      dms::cpu::quant_row_bytes(p.matrix, r, row.data());
      ASSERT_EQ(0, std::memcmp(row.data(), w.bytes.data() + r * row_bytes, row_bytes))
          << dms::ggml_type_name(spec.type) << " row " << r;
    }
  }
  std::vector<uint8_t> bytes(48 * 24), out(bytes.size());
  EXPECT_FALSE(dms::cpu::quant_packable({GgmlType::Q4_1, 17, 32, bytes.data()}));  // not whole groups
  EXPECT_FALSE(dms::cpu::quant_packable({GgmlType::Q5_0, 16, 32, bytes.data()}));  // no packed layout
  EXPECT_THROW(dms::cpu::quant_pack({GgmlType::Q4_1, 17, 32, bytes.data()}, out.data()), dms::Error);
  EXPECT_THROW(dms::cpu::quant_pack({GgmlType::Q5_0, 16, 32, bytes.data()}, out.data()), dms::Error);
}

// The kernel table quant_matmul builds for an ISA: the scalar fill, then the ISA's.
dms::cpu::quant::Kernels isa_kernels(CpuIsa isa) {
  dms::cpu::quant::Kernels k{};
  dms::cpu::quant::fill_scalar(k);
  if (isa == CpuIsa::Avx2) dms::cpu::quant::fill_avx2(k);
  if (isa == CpuIsa::Avx512) dms::cpu::quant::fill_avx512(k);
  return k;
}

dms::cpu::quant::DequantRow dequantizer(const dms::cpu::quant::Kernels& k, GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return k.dequant_q4_0;
    case GgmlType::Q4_1: return k.dequant_q4_1;
    case GgmlType::Q5_0: return k.dequant_q5_0;
    case GgmlType::Q5_1: return k.dequant_q5_1;
    case GgmlType::Q8_0: return k.dequant_q8_0;
    case GgmlType::Q2_K: return k.dequant_q2_k;
    case GgmlType::Q3_K: return k.dequant_q3_k;
    case GgmlType::Q4_K: return k.dequant_q4_k;
    case GgmlType::Q5_K: return k.dequant_q5_k;
    case GgmlType::Q6_K: return k.dequant_q6_k;
    case GgmlType::F16: return k.dequant_f16;
    case GgmlType::BF16: return k.dequant_bf16;
    default: return nullptr;
  }
}

// The batched path's dequantizer of every type on every ISA gives dms::dequantize_row's bits, on
// random blocks (zero, subnormal and largest fp16 scales among them; for F16 and BF16 every bit
// pattern, infinities and NaN included), rows of several lengths, the source one byte off any
// alignment and the destination one float off, writing nothing past the row's end.
TEST(QuantMatmul, DequantizerIsDequantizeRowBitForBit) {
  uint64_t seed = 6000;
  constexpr uint32_t kCanary = 0xDEADBEEF;
  for (CpuIsa isa : supported_isas()) {
    const dms::cpu::quant::Kernels k = isa_kernels(isa);
    for (const TypeSpec& spec : type_specs()) {
      const auto dequant = dequantizer(k, spec.type);
      ASSERT_NE(dequant, nullptr) << dms::ggml_type_name(spec.type);
      const int64_t block = dms::ggml_block_elems(spec.type);
      const std::vector<int64_t> lengths = is_16_bit(spec.type)
                                               ? std::vector<int64_t>{1, 7, 8, 9, 15, 16, 17, 100, 576}
                                               : std::vector<int64_t>{1, 2, 3, 5, 18, 48};  // in blocks
      for (int64_t length : lengths) {
        const int64_t cols = is_16_bit(spec.type) ? length : length * block, rows = 9;
        std::mt19937_64 rng(++seed);
        Weights w = random_weights(spec, rows, cols, rng);
        if (is_16_bit(spec.type)) {  // any 16 bits: NaN (quiet and signalling), infinities, subnormals
          for (auto& b : w.bytes) b = static_cast<uint8_t>(rng());
          for (int64_t r = 0; r < rows; ++r)
            dms::dequantize_row(spec.type, w.bytes.data() + r * 2 * cols, w.values.data() + r * cols, cols);
        }
        const size_t row_bytes = dms::ggml_row_bytes(spec.type, cols);
        const int64_t blocks = cols / block;
        std::vector<uint8_t> src(row_bytes + 1);
        std::vector<float> out(cols + 9);
        for (int64_t r = 0; r < rows; ++r) {
          std::memcpy(src.data() + 1, w.bytes.data() + r * row_bytes, row_bytes);
          for (float& f : out) std::memcpy(&f, &kCanary, 4);
          dequant(src.data() + 1, blocks, out.data() + 1);
          const std::string what = std::string(dms::ggml_type_name(spec.type)) + " " + dms::cpu::cpu_isa_name(isa) +
                                   " cols " + std::to_string(cols) + " row " + std::to_string(r);
          for (int64_t j = 0; j < cols; ++j) {
            uint32_t got, want;
            std::memcpy(&got, &out[1 + j], 4);
            std::memcpy(&want, &w.values[r * cols + j], 4);
            ASSERT_EQ(got, want) << what << " element " << j << ": " << out[1 + j] << " vs " << w.values[r * cols + j];
          }
          for (int64_t j : {int64_t{0}, cols + 1, cols + 8}) {
            uint32_t bits;
            std::memcpy(&bits, &out[j], 4);
            ASSERT_EQ(bits, kCanary) << what << ": wrote outside the row at " << j - 1;
          }
        }
      }
    }
  }
}

dms::cpu::quant::PackedDequant packed_dequantizer(const dms::cpu::quant::Kernels& k, GgmlType t) {
  return t == GgmlType::Q4_0 ? k.packed_dequant_q4_0 : t == GgmlType::Q4_1 ? k.packed_dequant_q4_1
       : t == GgmlType::Q8_0 ? k.packed_dequant_q8_0 : nullptr;
}

// The packed dequantizers (SIMD ISAs) give dms::dequantize_row's bits, column-major with the
// stride asked for, writing nothing outside their 16 columns.
TEST(QuantMatmul, PackedDequantizerIsDequantizeRowBitForBit) {
  uint64_t seed = 6500;
  constexpr uint32_t kCanary = 0xDEADBEEF;
  for (CpuIsa isa : supported_isas()) {
    if (isa == CpuIsa::Scalar) continue;
    const dms::cpu::quant::Kernels k = isa_kernels(isa);
    for (const TypeSpec& spec : type_specs()) {
      if (!packs(spec)) continue;
      const auto dequant = packed_dequantizer(k, spec.type);
      ASSERT_NE(dequant, nullptr) << dms::ggml_type_name(spec.type);
      for (int64_t blocks : {1, 3, 18}) {
        const int64_t rows = 32, cols = 32 * blocks, stride = 35;  // two groups, 3 canary columns
        std::mt19937_64 rng(++seed);
        const Weights w = random_weights(spec, rows, cols, rng);
        const PackedCopy p = packed(w);
        std::vector<float> out(cols * stride);
        for (float& f : out) std::memcpy(&f, &kCanary, 4);
        const size_t group_bytes = 16 * dms::ggml_row_bytes(spec.type, cols);
        for (int64_t g = 0; g < 2; ++g) dequant(p.bytes.data() + g * group_bytes, blocks, out.data() + 16 * g, stride);
        for (int64_t e = 0; e < cols; ++e)
          for (int64_t c = 0; c < stride; ++c) {
            uint32_t got, want = kCanary;
            std::memcpy(&got, &out[e * stride + c], 4);
            if (c < rows) std::memcpy(&want, &w.values[c * cols + e], 4);
            ASSERT_EQ(got, want) << dms::ggml_type_name(spec.type) << " " << dms::cpu::cpu_isa_name(isa) << " cols "
                                 << cols << " element " << e << " column " << c;
          }
      }
    }
  }
}

dms::cpu::quant::PackedDotI16 packed_kernel(const dms::cpu::quant::Kernels& k, GgmlType t) {
  return t == GgmlType::Q4_0 ? k.packed_q4_0_i16 : t == GgmlType::Q4_1 ? k.packed_q4_1_i16
       : t == GgmlType::Q8_0 ? k.packed_q8_0_i16 : nullptr;
}

dms::cpu::quant::PackedDot packed_kernel_f32(const dms::cpu::quant::Kernels& k, GgmlType t) {
  return t == GgmlType::Q4_0 ? k.packed_q4_0 : t == GgmlType::Q4_1 ? k.packed_q4_1
       : t == GgmlType::Q8_0 ? k.packed_q8_0 : nullptr;
}

// Every build of the packed kernels (AVX2; AVX-512 with and without VNNI, where the CPU has them)
// does the same arithmetic per row: the same bits. quant_matmul runs the best of them, which the
// tests above check against the reference; this extends that to the others. The VNNI build runs
// twice: on the 16-bit levels alone, and with the byte planes (ActRows::bytes, built here from
// their description) that its 8-bit multiply-adds read.
TEST(QuantMatmul, PackedKernelsGiveTheSameBitsOnEveryIsa) {
  std::vector<std::pair<std::string, dms::cpu::quant::Kernels>> builds;
  for (CpuIsa isa : supported_isas())
    if (isa != CpuIsa::Scalar) builds.emplace_back(dms::cpu::cpu_isa_name(isa), isa_kernels(isa));
  if (dms::cpu::cpu_isa_supported(CpuIsa::Avx512) && __builtin_cpu_supports("avx512vnni")) {
    for (const char* name : {"avx512 vnni", "avx512 vnni, byte planes"}) {
      builds.emplace_back(name, isa_kernels(CpuIsa::Avx512));
      dms::cpu::quant::fill_avx512_vnni(builds.back().second);
    }
    EXPECT_NE(builds.back().second.split_levels, nullptr);
  }
  if (builds.size() < 2) GTEST_SKIP() << "one SIMD build on this CPU";
  uint64_t seed = 6800;
  for (const TypeSpec& spec : type_specs()) {
    if (!packs(spec)) continue;
    std::mt19937_64 rng(++seed);
    const int64_t rows = 32, cols = 576, n = 7;
    const Weights w = random_weights(spec, rows, cols, rng);
    const PackedCopy p = packed(w);
    const std::vector<float> x = random_activations(n, cols, rng);
    std::vector<int16_t> q(n * cols);
    std::vector<float> scale(n * cols / 32), sum(scale.size());
    builds[0].second.quantize_acts(x.data(), n, cols, q.data(), scale.data(), sum.data());
    std::vector<uint8_t> bytes(2 * n * cols);
    for (int64_t i = 0; i < n * cols; ++i) {  // element 8j + e: byte 16j + slot(e), its high byte 8 later
      const int64_t e = i % 8, slot = 2 * (e % 4) + e / 4;
      bytes[16 * (i / 8) + slot] = static_cast<uint8_t>(q[i] & 0xFF);
      bytes[16 * (i / 8) + 8 + slot] = static_cast<uint8_t>((q[i] - (q[i] & 0xFF)) / 256);
    }
    std::vector<float> x_sums(n * cols / 32);
    for (size_t b = 0; b < x_sums.size(); ++b)
      for (int64_t j = 0; j < 32; ++j) x_sums[b] += x[b * 32 + j];
    std::vector<std::vector<float>> out, out_f32;
    for (const auto& [name, k] : builds) {
      const dms::cpu::quant::ActRows acts{q.data(), scale.data(), sum.data(), cols,
                                          k.split_levels && name.ends_with("planes") ? bytes.data() : nullptr};
      if (k.split_levels) {  // the kernels' own split, which quant_matmul runs, gives the same bytes
        std::vector<uint8_t> split(bytes.size());
        k.split_levels(q.data(), n * cols, split.data());
        EXPECT_EQ(split, bytes) << name;
      }
      out.emplace_back(n * rows);
      out_f32.emplace_back(n * rows);
      for (int64_t g = 0; g < 2; ++g) {
        const uint8_t* group = p.bytes.data() + g * 16 * dms::ggml_row_bytes(spec.type, cols);
        packed_kernel(k, spec.type)(group, cols / 32, acts, static_cast<int>(n), out.back().data() + 16 * g, rows);
        packed_kernel_f32(k, spec.type)(group, cols / 32, x.data(), x_sums.data(), cols, static_cast<int>(n),
                                        out_f32.back().data() + 16 * g, rows);
      }
      EXPECT_EQ(0, std::memcmp(out.back().data(), out[0].data(), out[0].size() * sizeof(float)))
          << dms::ggml_type_name(spec.type) << ": " << name << " against " << builds[0].first;
      EXPECT_EQ(0, std::memcmp(out_f32.back().data(), out_f32[0].data(), out_f32[0].size() * sizeof(float)))
          << dms::ggml_type_name(spec.type) << " fp32 activations: " << name << " against " << builds[0].first;
    }
  }
}

TEST(QuantMatmul, AutoPathAtTheCrossover) {
  const TypeSpec& q4_1 = type_specs()[1];
  ASSERT_EQ(q4_1.type, GgmlType::Q4_1);
  const CpuIsa best = supported_isas().back();
  check(q4_1, best, QuantPath::Auto, 19, 576, dms::cpu::kBatchedMinRows - 1, 7);  // decode tolerance
  check(q4_1, best, QuantPath::Auto, 19, 576, dms::cpu::kBatchedMinRows, 8);      // batched tolerance
}

// Each activation row is summed in the same order whatever the other rows of the call: the
// decode path gives a row the same bits alone and among 7 or 17 rows (more than one pass of a
// kernel, more than one call of it), in the row layout and packed, with 16-bit and fp32 activations.
TEST(QuantMatmul, DecodeRowDoesNotDependOnTheOtherRows) {
  uint64_t seed = 3000;
  for (const TypeSpec& spec : type_specs())
    for (CpuIsa isa : supported_isas())
      for (bool pack : {false, true})
      for (Activations acts : {Activations::Int16, Activations::Float}) {
        if (pack && !packs(spec)) continue;
        std::mt19937_64 rng(++seed);
        const int64_t rows = pack ? 48 : 33, cols = test_cols(spec.type).back();
        const Weights w = random_weights(spec, rows, cols, rng);
        const PackedCopy p = pack ? packed(w) : PackedCopy{};
        const QuantMatrix& m = pack ? p.matrix : w.matrix;
        const std::vector<float> x = random_activations(17, cols, rng);
        for (int64_t n : {7, 17}) {
          std::vector<float> all(n * rows), alone(rows);
          dms::cpu::quant_matmul(m, x.data(), n, all.data(), {isa, QuantPath::Decode, acts});
          for (int64_t t = 0; t < n; ++t) {
            dms::cpu::quant_matmul(m, x.data() + t * cols, 1, alone.data(), {isa, QuantPath::Decode, acts});
            EXPECT_EQ(0, std::memcmp(alone.data(), all.data() + t * rows, rows * sizeof(float)))
                << dms::ggml_type_name(spec.type) << " " << dms::cpu::cpu_isa_name(isa) << (pack ? " packed" : "")
                << (acts == Activations::Float ? " fp32" : "") << " row " << t << " of " << n;
          }
        }
      }
}

// The two paths agree within the sum of their tolerances.
TEST(QuantMatmul, DecodeAgreesWithBatched) {
  uint64_t seed = 4000;
  for (const TypeSpec& spec : type_specs())
    for (CpuIsa isa : supported_isas()) {
      std::mt19937_64 rng(++seed);
      const int64_t rows = 33, cols = test_cols(spec.type).back(), n = 5;
      const Weights w = random_weights(spec, rows, cols, rng);
      const std::vector<float> x = random_activations(n, cols, rng);
      std::vector<float> decode(n * rows), batched(n * rows);
      dms::cpu::quant_matmul(w.matrix, x.data(), n, decode.data(), {isa, QuantPath::Decode});
      dms::cpu::quant_matmul(w.matrix, x.data(), n, batched.data(), {isa, QuantPath::Batched});
      const Expected d = reference(spec, w, x, n, path_of(spec, isa, QuantPath::Decode, n)),
                     b = reference(spec, w, x, n, Path::Batched);
      for (int64_t i = 0; i < n * rows; ++i)
        ASSERT_LE(std::fabs(decode[i] - batched[i]), d.tol[i] + b.tol[i])
            << dms::ggml_type_name(spec.type) << " " << dms::cpu::cpu_isa_name(isa) << " output " << i;
    }
}

// A NaN or infinity among a row's activations reaches that row's outputs, as with fp32 activations,
// and no other row's.
TEST(QuantMatmul, NonFiniteActivationsStayInTheirRow) {
  uint64_t seed = 4500;
  for (const TypeSpec& spec : type_specs())
    for (CpuIsa isa : supported_isas())
      for (float bad : {std::nanf(""), INFINITY}) {
        std::mt19937_64 rng(++seed);
        const int64_t rows = 5, cols = test_cols(spec.type).back(), n = 3;
        const Weights w = random_weights(spec, rows, cols, rng);
        std::vector<float> x = random_activations(n, cols, rng);
        x[cols + 7] = bad;  // row 1
        std::vector<float> y(n * rows), alone(rows);
        dms::cpu::quant_matmul(w.matrix, x.data(), n, y.data(), {isa, QuantPath::Decode});
        for (int64_t r = 0; r < rows; ++r) {
          if (w.values[r * cols + 7] != 0.0f) {
            EXPECT_FALSE(std::isfinite(y[rows + r])) << dms::ggml_type_name(spec.type) << " " << dms::cpu::cpu_isa_name(isa);
          }
          EXPECT_TRUE(std::isfinite(y[r]) && std::isfinite(y[2 * rows + r])) << dms::ggml_type_name(spec.type);
        }
        if (!packs(spec)) continue;
        const Weights w16 = random_weights(spec, 16, cols, rng);
        const PackedCopy p = packed(w16);
        for (Activations acts : {Activations::Int16, Activations::Float}) {
          std::vector<float> yp(n * 16);
          dms::cpu::quant_matmul(p.matrix, x.data(), n, yp.data(), {isa, QuantPath::Decode, acts});
          for (int64_t r = 0; r < 16; ++r) {
            if (w16.values[r * cols + 7] != 0.0f) {
              EXPECT_FALSE(std::isfinite(yp[16 + r]))
                  << dms::ggml_type_name(spec.type) << " packed " << dms::cpu::cpu_isa_name(isa);
            }
            EXPECT_TRUE(std::isfinite(yp[r]) && std::isfinite(yp[32 + r])) << dms::ggml_type_name(spec.type) << " packed";
          }
        }
      }
}

TEST(QuantMatmul, QuantRowIsDequantizeRow) {
  uint64_t seed = 5000;
  for (const TypeSpec& spec : type_specs()) {
    std::mt19937_64 rng(++seed);
    const int64_t cols = test_cols(spec.type).back();
    const Weights w = random_weights(spec, 5, cols, rng);
    std::vector<float> row(cols);
    for (int64_t r = 0; r < 5; ++r) {
      dms::cpu::quant_row(w.matrix, r, row.data());
      EXPECT_EQ(0, std::memcmp(row.data(), w.values.data() + r * cols, cols * sizeof(float)))
          << dms::ggml_type_name(spec.type) << " row " << r;
    }
    if (!packs(spec)) continue;
    const Weights w32 = random_weights(spec, 32, cols, rng);
    const PackedCopy p = packed(w32);
    for (int64_t r = 0; r < 32; ++r) {
      dms::cpu::quant_row(p.matrix, r, row.data());
      EXPECT_EQ(0, std::memcmp(row.data(), w32.values.data() + r * cols, cols * sizeof(float)))
          << dms::ggml_type_name(spec.type) << " packed row " << r;
    }
  }
}

// Several matrices of one input in one call give each the bits quant_matmul gives it alone: packed
// ones of each type and of mixed types (q, k and v of different heights), and a mix of packed and
// row-layout ones (which takes the calls one by one), on every path.
TEST(QuantMatmul, ManyIsEachAlone) {
  uint64_t seed = 7000;
  std::vector<TypeSpec> packable;
  for (const TypeSpec& spec : type_specs())
    if (packs(spec)) packable.push_back(spec);
  ASSERT_GE(packable.size(), 2u);
  const int64_t cols = 576;
  for (CpuIsa isa : supported_isas())
    for (size_t mix = 0; mix < packable.size() + 2; ++mix)
      for (int64_t n : {1, 3, 9, 30}) {
        std::mt19937_64 rng(++seed);
        std::vector<Weights> ws;
        std::vector<PackedCopy> ps;
        const int64_t heights[3] = {96, 32, 48};
        for (int i = 0; i < 3; ++i) {
          const TypeSpec& spec = mix < packable.size() ? packable[mix] : packable[i % packable.size()];
          ws.push_back(random_weights(spec, heights[i], cols, rng));
        }
        for (const Weights& w : ws) ps.push_back(packed(w));
        std::vector<QuantMatrix> matrices;
        for (int i = 0; i < 3; ++i) matrices.push_back(mix == packable.size() + 1 && i == 1 ? ws[i].matrix : ps[i].matrix);
        const std::vector<float> x = random_activations(n, cols, rng);
        std::vector<std::vector<float>> many(3), alone(3);
        std::vector<float*> ys;
        for (int i = 0; i < 3; ++i) {
          many[i].assign(n * heights[i], std::nanf(""));
          alone[i].assign(n * heights[i], std::nanf(""));
          ys.push_back(many[i].data());
        }
        dms::cpu::quant_matmul_many(matrices, x.data(), n, ys, {isa});
        for (int i = 0; i < 3; ++i) {
          dms::cpu::quant_matmul(matrices[i], x.data(), n, alone[i].data(), {isa});
          EXPECT_EQ(0, std::memcmp(many[i].data(), alone[i].data(), many[i].size() * sizeof(float)))
              << dms::cpu::cpu_isa_name(isa) << " mix " << mix << " n " << n << " matrix " << i;
        }
      }
}

TEST(QuantMatmul, RejectsWhatItCannotCompute) {
  std::vector<uint8_t> bytes(4096);
  std::vector<float> x(256), y(4);
  auto run = [&](GgmlType t, int64_t cols) {
    dms::cpu::quant_matmul({t, 1, cols, bytes.data()}, x.data(), 1, y.data());
  };
  EXPECT_THROW(run(GgmlType::Q8_1, 32), dms::Error);   // no kernel for this type
  EXPECT_THROW(run(GgmlType::Q4_K, 128), dms::Error);  // half a super-block per row
  EXPECT_THROW(run(GgmlType::Q4_0, 48), dms::Error);
  EXPECT_THROW(dms::cpu::quant_row({GgmlType::Q4_0, 2, 32, bytes.data()}, 2, x.data()), dms::Error);
  // Packed matrices come in whole groups of 16 rows of a type with a packed layout.
  EXPECT_THROW(dms::cpu::quant_matmul({GgmlType::Q4_0, 17, 32, bytes.data(), true}, x.data(), 1, y.data()), dms::Error);
  EXPECT_THROW(dms::cpu::quant_matmul({GgmlType::Q5_0, 16, 32, bytes.data(), true}, x.data(), 1, y.data()), dms::Error);
  // quant_matmul_many checks every matrix, and wants one output per matrix and one width.
  std::vector<float> y2(32);
  const QuantMatrix good{GgmlType::Q4_0, 16, 32, bytes.data(), true};
  EXPECT_THROW(dms::cpu::quant_matmul_many({good, {GgmlType::Q4_0, 17, 32, bytes.data(), true}}, x.data(), 1,
                                           {y2.data(), y2.data()}),
               dms::Error);
  EXPECT_THROW(dms::cpu::quant_matmul_many({good, good}, x.data(), 1, {y2.data()}), dms::Error);
  EXPECT_THROW(dms::cpu::quant_matmul_many({good, {GgmlType::Q4_0, 16, 64, bytes.data(), true}}, x.data(), 1,
                                           {y2.data(), y2.data()}),
               dms::Error);  // two widths for one input
}

}  // namespace
