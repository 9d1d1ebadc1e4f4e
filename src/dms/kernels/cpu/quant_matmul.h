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
//
// Q4_0, Q4_1 and Q8_0 matrices may also be packed (quant_pack; the engine packs them at load where
// quant_pack_pays): the same bytes regrouped so that the blocks of 16 rows lie side by side and
// one vector instruction works on 16 rows at once. The decode path then multiplies 16 rows per
// pass with 16-bit integer multiply-adds whose lanes are the rows (no horizontal sums, one scale
// conversion for 16 blocks), or with Activations::Float converts the levels of 16 rows to fp32 and
// multiplies them into the broadcast activations; the batched path dequantizes 16 rows per vector
// into a column-major tile.
#pragma once
#include <cstdint>
#include <vector>

#include "dms/format/ggml_types.h"

namespace dms::cpu {

// A weight matrix as stored in a GGUF file: `rows` rows of `cols` values, each row a run of ggml
// blocks of `type` (row-major, rows ggml_row_bytes(type, cols) apart); or, when `packed`, the same
// bytes as quant_pack lays them out. Non-owning.
struct QuantMatrix {
  GgmlType type = GgmlType::F32;
  int64_t rows = 0, cols = 0;
  const uint8_t* data = nullptr;
  bool packed = false;
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

// The packed layout. Rows are taken kPackRows at a time; a group's blocks follow one another, and
// block b of a group holds block b of each of its rows, regrouped (all little-endian):
// - the rows' fp16 scales d, 2 bytes per row (32 bytes); Q4_1 then the fp16 mins m (32 bytes);
// - Q4_0/Q4_1: four 64-byte chunks; chunk c, bytes 4r..4r+3 are a 32-bit word of row r holding
//   its levels of elements 8c..8c+7: element 8c+2p in bits 4p..4p+3 and element 8c+2p+1 in bits
//   16+4p..16+4p+3, so (word >> 4p) & 0x000F000F is the pair as two 16-bit integers;
// - Q8_0: sixteen 32-byte chunks; chunk p, bytes 2r and 2r+1 are row r's elements 2p and 2p+1.
// A group's block takes kPackRows times a ggml block's bytes: packing moves bytes, adds none.
constexpr int64_t kPackRows = 16;
// The types with a packed layout, and whether `w` (row layout) can be packed: such a type and a
// whole number of kPackRows-row groups.
bool quant_pack_supports(GgmlType type);
bool quant_packable(const QuantMatrix& w);
// Whether packing `type` makes quant_matmul faster on `isa` (measured in bench/RESULTS.md): Q4_0
// and Q4_1 on AVX2 and AVX-512, Q8_0 on AVX-512 (on AVX2 its row kernel reads faster at n = 1).
bool quant_pack_pays(GgmlType type, CpuIsa isa);
// Writes w (row layout, quant_packable) packed to out (as many bytes as w holds).
void quant_pack(const QuantMatrix& w, uint8_t* out);
// Row r of w (packed or not) as ggml blocks: ggml_row_bytes(type, cols) bytes to out.
void quant_row_bytes(const QuantMatrix& w, int64_t r, uint8_t* out);

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

// quant_matmul of each ws[i] into ys[i], all with the same input: where all are packed with 16-bit
// kernels on the decode path, the activations are quantized once and the rows of all the matrices
// split across the threads in one pass (a layer's q, k and v, or gate and up). Each ys[i] is the
// same bits as quant_matmul(ws[i], x, n, ys[i], options) gives. Throws Error as quant_matmul does,
// and for matrices of different widths or a count of outputs other than of matrices.
void quant_matmul_many(const std::vector<QuantMatrix>& ws, const float* x, int64_t n, const std::vector<float*>& ys,
                       QuantMatmulOptions options = {});

// Dequantizes row r into dst (cols floats), exactly as dms::dequantize_row does (embedding lookups).
void quant_row(const QuantMatrix& w, int64_t r, float* dst);

}  // namespace dms::cpu
