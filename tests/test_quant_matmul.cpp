// dms::cpu::quant_matmul and quant_row against dms::dequantize_row (the format's own dequantizer)
// and an fp64 matmul, on random blocks, for every type, both paths, rows as stored and packed,
// and every ISA level this CPU runs (test_quant_kernels.cpp checks the kernels build by build).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "dms/format/ggml_types.h"
#include "dms/kernels/cpu/quant_matmul.h"
#include "dms/util/error.h"
#include "test_quant_helpers.h"

namespace {

using dms::GgmlType;
using dms::cpu::CpuIsa;
using dms::cpu::QuantMatrix;
using dms::cpu::Activations;
using dms::cpu::QuantPath;
using namespace dms::test;

constexpr double kEps = 0x1p-24;  // fp32 unit roundoff

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

std::vector<int64_t> test_cols(GgmlType t) {
  if (is_16_bit(t)) return {1, 15, 16, 17, 100};  // the SIMD loops' tails
  const int64_t block = dms::ggml_block_elems(t);
  return block == 32 ? std::vector<int64_t>{32, 96, 576} : std::vector<int64_t>{256, 768};
}

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
