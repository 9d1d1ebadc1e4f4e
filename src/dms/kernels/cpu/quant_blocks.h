// What the per-ISA quantized-matmul kernels share: the layout of the 8-bit activation blocks
// and the table of row kernels. Plain data only (no inline functions, no library headers): each
// ISA translation unit is compiled with its own -m flags, and an inline function defined here
// would be emitted by each of them, leaving the linker free to keep an AVX-512 copy that older
// CPUs cannot run.
#pragma once
#include <cstdint>

namespace dms::cpu::quant {

// One activation block for the 32-element weight types (Q4_0 .. Q8_0): x ~= d * qs, with
// qs = round(x / d) and d = max|x| / 127 over the block; sum = sum of qs, which turns the
// weight offsets (Q4_0's -8, Q4_1's min) into one multiply per block, and dsum = d * sum, the
// same in fp32 for kernels that do not keep the offset in integers.
struct ActBlock32 {
  float d;
  float dsum;
  int32_t sum;
  int8_t qs[32];
};

// One activation block for the K-quants (256 elements, d = max|x| / 127 over all of them);
// bsums[g] = sum of qs[16g .. 16g+15] for the per-16 and per-32 offsets and mins.
struct ActBlock256 {
  float d;
  int16_t bsums[16];
  int8_t qs[256];
};

// out[t * out_stride] = dot(weight row, activation row t) for t < n. `row` holds `blocks`
// weight blocks; activation row t starts at act + t * act_stride bytes and holds the same number
// of ActBlock32 / ActBlock256 (or, for F16 and BF16, blocks * 1 floats).
using RowDot = void (*)(const uint8_t* row, int64_t blocks, const uint8_t* act, int64_t act_stride, int n,
                        float* out, int64_t out_stride);

// One ISA's kernels; nullptr where it has none (the caller falls back to the scalar one).
struct Kernels {
  RowDot q4_0, q4_1, q5_0, q5_1, q8_0;
  RowDot q2_k, q3_k, q4_k, q5_k, q6_k;
  RowDot f16, bf16;
};

// Filled by quant_kernels_<isa>.cpp. Call the x86 ones only where the CPU has the ISA.
void fill_scalar(Kernels& k);
void fill_avx2(Kernels& k);    // AVX2, FMA, F16C
void fill_avx512(Kernels& k);  // AVX-512 F/BW/VL/VNNI on top of the above

}  // namespace dms::cpu::quant
