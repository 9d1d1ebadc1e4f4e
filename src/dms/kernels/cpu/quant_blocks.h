// What the per-ISA quantized-matmul kernels share: the row-kernel signature and the table of
// kernels. Plain data only (no inline functions, no library headers): each ISA translation unit
// is compiled with its own -m flags, and an inline function defined here would be emitted by each
// of them, leaving the linker free to keep an AVX-512 copy that older CPUs cannot run.
#pragma once
#include <cstdint>

namespace dms::cpu::quant {

// out[t * out_stride] = dot(weight row, x + t * x_stride) in fp32, for t < n (n <= 8). `row`
// holds `blocks` weight blocks (for F16 and BF16, `blocks` values); each activation row holds
// as many fp32 elements. A row's result is the same bits for every n: each activation row is
// summed in an order that does not depend on the others.
using RowDot = void (*)(const uint8_t* row, int64_t blocks, const float* x, int64_t x_stride, int n, float* out,
                        int64_t out_stride);

// Activation rows quantized to 16-bit integers per 32 elements: element j of a row is
// q[j] * scale[j / 32], q = round(x / scale) with scale = max |x| of the 32 / 32767, and sum[j / 32]
// is scale times the sum of the 32 levels (for the blocks' constant terms: Q4_0's offset, Q4_1's
// min). Rows are `cols` levels and cols / 32 scales and sums apart; cols is a multiple of 32.
// `bytes`, where the kernels ask for it (Kernels::split_levels), holds the same levels split into
// bytes for 8-bit dot products: level a = 256 h + l with l = a & 0xFF (unsigned) and h = a >> 8
// (signed). Per 8 elements e0..e7 of a row, 16 bytes: l of e0 e4 e1 e5, l of e2 e6 e3 e7, then h
// of the same; rows 2 * cols bytes apart. Null where not filled.
struct ActRows {
  const int16_t* q;
  const float* scale;
  const float* sum;
  int64_t cols;
  const uint8_t* bytes = nullptr;
};

// Fills q, scale and sum (n rows) from n rows of fp32 activations `cols` apart.
using QuantizeActs = void (*)(const float* x, int64_t n, int64_t cols, int16_t* q, float* scale, float* sum);
// Writes ActRows::bytes (2 x count bytes) for `count` levels q (a multiple of 8).
using SplitLevels = void (*)(const int16_t* q, int64_t count, uint8_t* bytes);

// As RowDot, against quantized activation rows: out[t * out_stride] for the first n (<= 8) rows
// of x. Integer dot products per 32 weights, each scaled in fp32; a row's result is the same bits
// for every n.
using RowDotI16 = void (*)(const uint8_t* row, int64_t blocks, const ActRows& x, int n, float* out,
                           int64_t out_stride);

// Writes the row's `blocks` weight blocks (for F16 and BF16, `blocks` values) to out as fp32, the
// same bits as dms::dequantize_row for every block whose scale fields are finite (and, for F16 and
// BF16, for every value): each weight's multiply and add are rounded separately, as there, never
// fused. The batched path's dequantizer.
using DequantRow = void (*)(const uint8_t* row, int64_t blocks, float* out);

// A packed group of kPackRows (16) weight rows (quant_matmul.h, "The packed layout"), `blocks`
// blocks long, against quantized activation rows: out[t * out_stride + r] for its rows r and the
// first n (<= 8) activation rows t. Per row the same arithmetic as RowDotI16 up to the order of
// the fp32 sums (each block's integer sum is formed whole, then scaled); a row's result is the
// same bits for every n.
using PackedDotI16 = void (*)(const uint8_t* group, int64_t blocks, const ActRows& x, int n, float* out,
                              int64_t out_stride);

// As PackedDotI16, against fp32 activation rows `cols` apart, with x_sums[t * cols / 32 + b] the
// fp32 sum of row t's block b (for the blocks' constant terms). Per row the arithmetic of RowDot
// up to the order of the sums (each block's levels times activations are summed, then scaled);
// a row's result is the same bits for every n.
using PackedDot = void (*)(const uint8_t* group, int64_t blocks, const float* x, const float* x_sums, int64_t cols,
                           int n, float* out, int64_t out_stride);

// A packed group's weights as fp32, column-major: out[e * out_stride + r] is element e of the
// group's row r, the same bits as dms::dequantize_row (as DequantRow). The batched path's.
using PackedDequant = void (*)(const uint8_t* group, int64_t blocks, float* out, int64_t out_stride);

// One ISA's kernels; the ISA's fill leaves a type it has no kernel for on the scalar one. The
// 16-bit-activation kernels are null where the ISA has none (the decode path then keeps fp32
// activations).
struct Kernels {
  RowDot q4_0, q4_1, q5_0, q5_1, q8_0;
  RowDot q2_k, q3_k, q4_k, q5_k, q6_k;
  RowDot f16, bf16;
  QuantizeActs quantize_acts;
  SplitLevels split_levels = nullptr;  // where the packed 16-bit kernels read ActRows::bytes
  RowDotI16 q4_0_i16, q4_1_i16, q5_0_i16, q5_1_i16, q8_0_i16, q4_k_i16, q6_k_i16;
  DequantRow dequant_q4_0, dequant_q4_1, dequant_q5_0, dequant_q5_1, dequant_q8_0;
  DequantRow dequant_q2_k, dequant_q3_k, dequant_q4_k, dequant_q5_k, dequant_q6_k;
  DequantRow dequant_f16, dequant_bf16;
  // Null where the ISA has none (quant_matmul then unpacks rows for the row kernels).
  PackedDotI16 packed_q4_0_i16, packed_q4_1_i16, packed_q8_0_i16;
  PackedDot packed_q4_0, packed_q4_1, packed_q8_0;
  PackedDequant packed_dequant_q4_0, packed_dequant_q4_1, packed_dequant_q8_0;
};

// Filled by quant_kernels_<isa>.cpp. Call the x86 ones only where the CPU has the ISA.
void fill_scalar(Kernels& k);
void fill_avx2(Kernels& k);    // AVX2, FMA, F16C
void fill_avx512(Kernels& k);  // AVX-512 F/BW/VL on top of the above
void fill_avx512_vnni(Kernels& k);  // and VNNI: the packed kernels only, over fill_avx512's

}  // namespace dms::cpu::quant
