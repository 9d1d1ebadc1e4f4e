// What the per-ISA attention kernels share: the inner loops of the CPU attention kernel
// (paged_attention.cpp) over a run of stored K or V rows, read in the cache's own format and
// converted in registers. Plain data only, for the reason quant_blocks.h gives.
#pragma once
#include <cstdint>

namespace dms::cpu::attn {

// How a stored row holds its head_dim values (kv_quant.h): f32, bf16, f16, or q8 (head_dim int8
// levels, then one fp16 scale per `group` values).
enum class RowFormat : uint8_t { F32, BF16, F16, Q8 };

struct Rows {
  RowFormat format;
  const uint8_t* data;  // row j at data + j * stride
  int64_t stride;       // bytes
  int64_t n;            // rows
  int64_t dim;          // values per row
  int64_t group;        // q8: values per scale
};

// scores[h * n + j] = dot(q + h * dim, row j), for h < heads (the query heads of one KV head).
using ScoreFn = void (*)(const float* q, int64_t heads, const Rows& rows, float* scores);

// One tile folded into the online softmax of `heads` query rows (q + h * dim): s_j = scale *
// q_h . key j, -inf where visible[j] == 0 (visible nullptr: every key seen); then max[h] <- m =
// max(max[h], s_j), sum[h] <- sum[h] e^(max[h] - m) + sum_j e^(s_j - m), acc[h] <- acc[h]
// e^(max[h] - m) + sum_j e^(s_j - m) value j. A row that sees no key of the tile is unchanged.
// `w`: heads * n floats of scratch.
using FoldFn = void (*)(const float* q, int64_t heads, float scale, const Rows& keys, const Rows& values,
                        const uint8_t* visible, float* max, float* sum, float* acc, float* w);

// SwiGLU's gate in place (swiglu.h): gate[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + e^-x) with
// the exp that libtorch exports from SLEEF (1 ulp), two vectors at a time as ATen's silu kernel
// goes, over the first n - n % (2 * lanes) elements. Returns how many it did; -1 when libtorch
// exports no such exp.
using SwigluFn = int64_t (*)(float* gate, const float* up, int64_t n);

struct Kernels {
  ScoreFn scores = nullptr;
  FoldFn fold = nullptr;
  int64_t run = 0;  // values per step of the loops: dim must be a multiple of it (and a q8 group equal)
  SwigluFn swiglu = nullptr;
};

// Filled by attention_kernels_<isa>.cpp; call only where the CPU has the ISA.
void fill_avx2(Kernels& k);    // AVX2, FMA, F16C
void fill_avx512(Kernels& k);  // AVX-512 F/BW/VL on top of the above

}  // namespace dms::cpu::attn
