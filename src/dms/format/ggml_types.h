// ggml tensor types as stored in GGUF, their block layouts, and dequantization to fp32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace dms {

enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41,
};

std::string ggml_type_name(GgmlType t);        // "Q4_K", or "type 99" for unknown values
bool ggml_type_known(uint32_t raw);             // a value ggml defines
bool ggml_type_dequantizable(GgmlType t);       // one this project can turn into fp32
// Block geometry of a known type; throw Error for values ggml_type_known() rejects.
int64_t ggml_block_elems(GgmlType t);           // elements per block (1 for plain types)
size_t ggml_block_bytes(GgmlType t);            // bytes per block
// Bytes for n elements; n must be a multiple of the block size (callers check).
size_t ggml_row_bytes(GgmlType t, int64_t n);

// Dequantizes n elements (a multiple of the block size) from src into dst. Throws Error for
// a type that is not dequantizable or an n that is not a whole number of blocks.
void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n);

}  // namespace dms
