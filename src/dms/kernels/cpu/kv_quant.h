// 8-bit KV rows (--kv-dtype q8). The cache keeps its dtype as an at::ScalarType; q8 is
// at::kChar, and a q8 row of head_dim values is stored as head_dim int8 levels followed by one
// fp16 scale per group of kQ8Group values (a whole row when head_dim is not a multiple of it):
// value = level * scale, scale = max |value| of the group / 127 rounded to fp16, levels rounded
// to nearest. 64 values take 68 bytes instead of 128 in bf16.
//
// Why groups of 32 rather than one scale per row: a group's largest value is at most its row's, so
// its step, and so each value's error, is never larger; keys after RoPE have a few channels far
// larger than the rest, which one scale per row would let set every value's step. At head_dim 64
// both layouts take 68 bytes; at 128, 136 against 130.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>

namespace dms::cpu {

constexpr at::ScalarType kQ8 = at::kChar;
constexpr int64_t kQ8Group = 32;

// Values per scale of a q8 row of head_dim values.
inline int64_t q8_group(int64_t head_dim) { return head_dim % kQ8Group == 0 ? kQ8Group : head_dim; }

// Bytes of one stored row of head_dim values in `dtype` (f32, bf16, f16 or q8), scales included.
int64_t kv_row_bytes(at::ScalarType dtype, int64_t head_dim);
// "f32", "bf16", "f16" or "q8", and back (nullopt for another name).
std::string kv_dtype_name(at::ScalarType dtype);
std::optional<at::ScalarType> kv_dtype_from_name(const std::string& name);

// One row of head_dim floats to q8 (kv_row_bytes(kQ8, head_dim) bytes at `out`), and back.
void quantize_q8_row(const float* x, int64_t head_dim, uint8_t* out);
void dequantize_q8_row(const uint8_t* row, int64_t head_dim, float* out);

// x [..., head_dim] (any float dtype) as stored rows: for f32/bf16/f16 x in that dtype; for q8
// a kChar tensor [..., kv_row_bytes] of quantized rows. Contiguous, and never x's own memory
// (the caller may overwrite x before the rows are stored). With `kept`, the rows go into it where
// kept_or_empty (util/kept_tensor.h) allows.
at::Tensor to_kv_rows(const at::Tensor& x, at::ScalarType dtype, at::Tensor* kept = nullptr);
// Stored rows back to fp32 [..., head_dim] (tests and tools).
at::Tensor kv_rows_to_float(const at::Tensor& rows, at::ScalarType dtype, int64_t head_dim);

}  // namespace dms::cpu
