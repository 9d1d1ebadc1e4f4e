// Portable row kernels for every supported type: the fallback on any CPU, and the only kernel of
// the types without a SIMD one. The weight row is dequantized by dms::dequantize_row (the
// format's reference) into a per-thread scratch and dotted with each fp32 activation row. The
// dequantizers are dms::dequantize_row itself.
#include <vector>

#include "dms/format/ggml_types.h"
#include "dms/kernels/cpu/quant_blocks.h"

namespace dms::cpu::quant {
namespace {

// Eight partial sums, one per lane of a 256-bit vector, so the compiler can vectorise the loop.
template <GgmlType T>
void dot_dequantized(const uint8_t* row, int64_t blocks, const float* x, int64_t x_stride, int n, float* out,
                     int64_t out_stride) {
  const int64_t cols = blocks * ggml_block_elems(T);
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(cols));
  const float* w = scratch.data();
  dequantize_row(T, row, scratch.data(), cols);
  for (int t = 0; t < n; ++t) {
    const float* xt = x + t * x_stride;
    float lanes[8] = {};
    int64_t i = 0;
    for (; i + 8 <= cols; i += 8)
      for (int u = 0; u < 8; ++u) lanes[u] += w[i + u] * xt[i + u];
    float acc = 0;
    for (; i < cols; ++i) acc += w[i] * xt[i];
    for (int u = 0; u < 8; ++u) acc += lanes[u];
    out[t * out_stride] = acc;
  }
}

// The format's reference dequantizer, as a DequantRow.
template <GgmlType T>
void dequantize_blocks(const uint8_t* row, int64_t blocks, float* out) {
  dequantize_row(T, row, out, blocks * ggml_block_elems(T));
}

}  // namespace

void fill_scalar(Kernels& k) {
  k.q4_0 = dot_dequantized<GgmlType::Q4_0>;
  k.q4_1 = dot_dequantized<GgmlType::Q4_1>;
  k.q5_0 = dot_dequantized<GgmlType::Q5_0>;
  k.q5_1 = dot_dequantized<GgmlType::Q5_1>;
  k.q8_0 = dot_dequantized<GgmlType::Q8_0>;
  k.q2_k = dot_dequantized<GgmlType::Q2_K>;
  k.q3_k = dot_dequantized<GgmlType::Q3_K>;
  k.q4_k = dot_dequantized<GgmlType::Q4_K>;
  k.q5_k = dot_dequantized<GgmlType::Q5_K>;
  k.q6_k = dot_dequantized<GgmlType::Q6_K>;
  k.f16 = dot_dequantized<GgmlType::F16>;
  k.bf16 = dot_dequantized<GgmlType::BF16>;
  k.dequant_q4_0 = dequantize_blocks<GgmlType::Q4_0>;
  k.dequant_q4_1 = dequantize_blocks<GgmlType::Q4_1>;
  k.dequant_q5_0 = dequantize_blocks<GgmlType::Q5_0>;
  k.dequant_q5_1 = dequantize_blocks<GgmlType::Q5_1>;
  k.dequant_q8_0 = dequantize_blocks<GgmlType::Q8_0>;
  k.dequant_q2_k = dequantize_blocks<GgmlType::Q2_K>;
  k.dequant_q3_k = dequantize_blocks<GgmlType::Q3_K>;
  k.dequant_q4_k = dequantize_blocks<GgmlType::Q4_K>;
  k.dequant_q5_k = dequantize_blocks<GgmlType::Q5_K>;
  k.dequant_q6_k = dequantize_blocks<GgmlType::Q6_K>;
  k.dequant_f16 = dequantize_blocks<GgmlType::F16>;
  k.dequant_bf16 = dequantize_blocks<GgmlType::BF16>;
}

}  // namespace dms::cpu::quant
