// The quantized-weight kernels one ISA build at a time: quant_pack's layout, the batched path's
// dequantizers against dms::dequantize_row bit for bit, and the packed decode kernels of every
// SIMD build (AVX2, AVX-512, AVX-512 VNNI with and without byte planes) giving the same bits.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "dms/format/ggml_types.h"
#include "dms/kernels/cpu/quant_blocks.h"
#include "dms/kernels/cpu/quant_matmul.h"
#include "dms/util/error.h"
#include "test_quant_helpers.h"

namespace {

using dms::GgmlType;
using dms::cpu::CpuIsa;
using namespace dms::test;

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

}  // namespace
