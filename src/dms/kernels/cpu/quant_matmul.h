// Matrix products with weights kept as GGUF stores them (ggml blocks or 16-bit floats), so
// inference reads the file's bytes instead of an fp32 copy four to eight times their size.
//
// Two paths, chosen by the number of activation rows n:
// - decode (n < kBatchedMinRows): up to 8 activation rows per read of the weights, rows split
//   across at::parallel_for's threads; every weight byte is read once per call. For Q4_0..Q8_0,
//   Q4_K and Q6_K on AVX2 and AVX-512 the activations are quantized to 16-bit integers per 32
//   values (a step of 1/32767 of the largest |x| of the 32) and each block's levels are multiplied
//   into them with integer multiply-adds; elsewhere, or with Activations::Float, each weight block
//   is dequantized in registers and multiplied into the fp32 activations. A row's result is the
//   same bits whatever the other rows of the call.
// - batched: tiles of weight rows are dequantized to an fp32 scratch that fits the L2 caches and
//   multiplied by BLAS (at::mm); compute-bound, so the 4-8x larger fp32 tile costs little.
//
// The kernels come in a portable scalar version and AVX2 and AVX-512 ones, each in its own
// translation unit; the best the CPU runs is chosen at run time.
#pragma once
#include <cstdint>

#include "dms/format/ggml_types.h"

namespace dms::cpu {

// A weight matrix as stored in a GGUF file: `rows` rows of `cols` values, each row a run of ggml
// blocks of `type` (row-major, rows ggml_row_bytes(type, cols) apart). Non-owning.
struct QuantMatrix {
  GgmlType type = GgmlType::F32;
  int64_t rows = 0, cols = 0;
  const uint8_t* data = nullptr;
};

// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K .. Q6_K, F16, BF16.
bool quant_matmul_supports(GgmlType type);

// From this many activation rows on, quant_matmul takes the batched path (measured in
// bench/RESULTS.md, "Quantized matmul kernels").
constexpr int64_t kBatchedMinRows = 24;

enum class CpuIsa { Scalar, Avx2, Avx512 };
const char* cpu_isa_name(CpuIsa isa);  // "scalar", "avx2", "avx512"
bool cpu_isa_supported(CpuIsa isa);    // this CPU (and OS) runs it
// The best supported level, lowered to DMS_CPU_ISA (scalar|avx2|avx512) when that is set.
// Throws Error for another value of DMS_CPU_ISA.
CpuIsa default_cpu_isa();

enum class QuantPath { Auto, Decode, Batched };

// The decode path's activations: Int16 (quantized per 32 values, where the type and ISA have such
// kernels) or Float (fp32 throughout: the exact product up to fp32 rounding, slower). The default
// is Int16, or what DMS_ACTIVATIONS (i16|f32) says, or what set_default_activations last set.
enum class Activations { Int16, Float };
Activations default_activations();
void set_default_activations(Activations activations);

struct QuantMatmulOptions {
  CpuIsa isa = default_cpu_isa();
  QuantPath path = QuantPath::Auto;  // Auto: decode below kBatchedMinRows rows, batched from there
  Activations activations = default_activations();
};

// y[n x rows] = x[n x cols] * W^T, fp32 in and out (both row-major, contiguous). Throws Error for
// an unsupported type, a cols that is not a whole number of blocks, or an ISA the CPU lacks.
void quant_matmul(const QuantMatrix& w, const float* x, int64_t n, float* y, QuantMatmulOptions options = {});

// Dequantizes row r into dst (cols floats), exactly as dms::dequantize_row does (embedding lookups).
void quant_row(const QuantMatrix& w, int64_t r, float* dst);

}  // namespace dms::cpu
