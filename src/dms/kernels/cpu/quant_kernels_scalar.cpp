// Portable row kernels for every supported type: the fallback on any CPU and the reference the
// SIMD kernels are tested beside. Each block is unpacked to unsigned integer levels, dotted with
// the 8-bit activations in integers, and the type's offsets (Q4_0's -8, Q3_K's -4, Q6_K's -32)
// or mins enter through the activation sums, as the SIMD kernels do it.
#include <cstring>

#include "dms/format/half.h"
#include "dms/format/little_endian.h"
#include "dms/kernels/cpu/quant_blocks.h"

namespace dms::cpu::quant {
namespace {

const ActBlock32* act32(const uint8_t* act, int64_t stride, int t) {
  return reinterpret_cast<const ActBlock32*>(act + t * stride);
}
const ActBlock256* act256(const uint8_t* act, int64_t stride, int t) {
  return reinterpret_cast<const ActBlock256*>(act + t * stride);
}

int dot32(const uint8_t* levels, const int8_t* qs) {
  int s = 0;
  for (int j = 0; j < 32; ++j) s += levels[j] * qs[j];
  return s;
}

int dot16(const uint8_t* levels, const int8_t* qs) {
  int s = 0;
  for (int j = 0; j < 16; ++j) s += levels[j] * qs[j];
  return s;
}

// Levels of the 32-element types, in element order; the fifth bits of Q5 come from qh.
void nibbles(const uint8_t* qs, uint8_t* levels) {
  for (int j = 0; j < 16; ++j) {
    levels[j] = qs[j] & 0x0F;
    levels[j + 16] = qs[j] >> 4;
  }
}

void nibbles_and_fifth_bits(const uint8_t* qs, uint32_t qh, uint8_t* levels) {
  nibbles(qs, levels);
  for (int j = 0; j < 32; ++j) levels[j] |= static_cast<uint8_t>(((qh >> j) & 1) << 4);
}

// Symmetric 32-element types: w = d * (level - offset).
template <int kBlockBytes, int kOffset, bool kFifthBit>
void dot_symmetric32(const uint8_t* row, int64_t blocks, const uint8_t* act, int64_t act_stride, int n,
                     float* out, int64_t out_stride) {
  for (int t = 0; t < n; ++t) {
    const ActBlock32* a = act32(act, act_stride, t);
    float acc = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* blk = row + b * kBlockBytes;
      uint8_t levels[32];
      if constexpr (kFifthBit) nibbles_and_fifth_bits(blk + 6, load_u32(blk + 2), levels);
      else nibbles(blk + 2, levels);
      const int s = dot32(levels, a[b].qs) - kOffset * a[b].sum;
      acc += fp16_to_fp32(load_u16(blk)) * a[b].d * static_cast<float>(s);
    }
    out[t * out_stride] = acc;
  }
}

// 32-element types with a minimum: w = d * level + m.
template <int kBlockBytes, bool kFifthBit>
void dot_with_min32(const uint8_t* row, int64_t blocks, const uint8_t* act, int64_t act_stride, int n,
                    float* out, int64_t out_stride) {
  for (int t = 0; t < n; ++t) {
    const ActBlock32* a = act32(act, act_stride, t);
    float acc = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* blk = row + b * kBlockBytes;
      uint8_t levels[32];
      if constexpr (kFifthBit) nibbles_and_fifth_bits(blk + 8, load_u32(blk + 4), levels);
      else nibbles(blk + 4, levels);
      const float d = fp16_to_fp32(load_u16(blk)), m = fp16_to_fp32(load_u16(blk + 2));
      acc += d * a[b].d * static_cast<float>(dot32(levels, a[b].qs)) + m * a[b].d * static_cast<float>(a[b].sum);
    }
    out[t * out_stride] = acc;
  }
}

void dot_q8_0(const uint8_t* row, int64_t blocks, const uint8_t* act, int64_t act_stride, int n, float* out,
              int64_t out_stride) {
  for (int t = 0; t < n; ++t) {
    const ActBlock32* a = act32(act, act_stride, t);
    float acc = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* blk = row + b * 34;
      int s = 0;
      for (int j = 0; j < 32; ++j) s += static_cast<int8_t>(blk[2 + j]) * a[b].qs[j];
      acc += fp16_to_fp32(load_u16(blk)) * a[b].d * static_cast<float>(s);
    }
    out[t * out_stride] = acc;
  }
}

// The K-quants: Unpack(block, levels[256], scales[16], mins[16], d, dmin) gives unsigned levels in
// element order with one scale per 16 elements (a per-32 scale is repeated), and either mins
// (w = d * scale * level - dmin * min) or a fixed offset (w = d * scale * (level - kOffset)).
template <int kBlockBytes, int kOffset, void (*Unpack)(const uint8_t*, uint8_t*, int*, int*, float&, float&)>
void dot_k(const uint8_t* row, int64_t blocks, const uint8_t* act, int64_t act_stride, int n, float* out,
           int64_t out_stride) {
  for (int t = 0; t < n; ++t) {
    const ActBlock256* a = act256(act, act_stride, t);
    float acc = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      uint8_t levels[256];
      int scales[16], mins[16];
      float d, dmin;
      Unpack(row + b * kBlockBytes, levels, scales, mins, d, dmin);
      int scaled = 0, min_sum = 0;
      for (int g = 0; g < 16; ++g) {
        scaled += scales[g] * (dot16(levels + 16 * g, a[b].qs + 16 * g) - kOffset * a[b].bsums[g]);
        min_sum += mins[g] * a[b].bsums[g];
      }
      acc += a[b].d * (d * static_cast<float>(scaled) - dmin * static_cast<float>(min_sum));
    }
    out[t * out_stride] = acc;
  }
}

// Q2_K: scales[16] (4-bit scale, 4-bit min), qs[64], d, dmin. Each 32 bytes of qs hold four
// 32-element groups, one per 2-bit plane; scales go in element order by 16.
void unpack_q2_k(const uint8_t* b, uint8_t* levels, int* scales, int* mins, float& d, float& dmin) {
  for (int g = 0; g < 16; ++g) {
    scales[g] = b[g] & 0x0F;
    mins[g] = b[g] >> 4;
  }
  for (int e = 0; e < 256; ++e) {
    const int half = e / 128, plane = (e % 128) / 32, l = e % 32;
    levels[e] = (b[16 + 32 * half + l] >> (2 * plane)) & 3;
  }
  d = fp16_to_fp32(load_u16(b + 80));
  dmin = fp16_to_fp32(load_u16(b + 82));
}

// Q3_K: hmask[32], qs[64], 12 bytes of sixteen 6-bit scales (stored + 32), d. Level = 2 low
// bits | high bit << 2, so the value is level - 4.
void unpack_q3_k(const uint8_t* b, uint8_t* levels, int* scales, int* mins, float& d, float& dmin) {
  const uint8_t* packed = b + 96;
  for (int g = 0; g < 16; ++g) {
    const int low = g < 8 ? (packed[g] & 0x0F) : (packed[g - 8] >> 4);
    const int high = (packed[8 + g % 4] >> (2 * (g / 4))) & 3;
    scales[g] = (low | (high << 4)) - 32;
    mins[g] = 0;
  }
  for (int e = 0; e < 256; ++e) {
    const int half = e / 128, plane = (e % 128) / 32, l = e % 32;
    const int low = (b[32 + 32 * half + l] >> (2 * plane)) & 3;
    const int high = (b[l] >> (4 * half + plane)) & 1;
    levels[e] = static_cast<uint8_t>(low | (high << 2));
  }
  d = fp16_to_fp32(load_u16(b + 108));
  dmin = 0;
}

// The eight 6-bit (scale, min) pairs of Q4_K and Q5_K, one per 32 elements, repeated per 16.
void k4_scales_mins(const uint8_t* q, int* scales, int* mins) {
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    if (j < 4) {
      sc = q[j] & 63;
      m = q[j + 4] & 63;
    } else {
      sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
      m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
    scales[2 * j] = scales[2 * j + 1] = sc;
    mins[2 * j] = mins[2 * j + 1] = m;
  }
}

// Q4_K: d, dmin, scales[12], qs[128]; each 32 bytes hold two 32-element groups (low nibbles first).
void unpack_q4_k(const uint8_t* b, uint8_t* levels, int* scales, int* mins, float& d, float& dmin) {
  k4_scales_mins(b + 4, scales, mins);
  for (int e = 0; e < 256; ++e) {
    const int group = e / 32, l = e % 32;
    const uint8_t byte = b[16 + 32 * (group / 2) + l];
    levels[e] = group % 2 ? byte >> 4 : byte & 0x0F;
  }
  d = fp16_to_fp32(load_u16(b));
  dmin = fp16_to_fp32(load_u16(b + 2));
}

// Q5_K: as Q4_K with qh[32] before the nibbles; bit g of qh[l] is the fifth bit of element 32g + l.
void unpack_q5_k(const uint8_t* b, uint8_t* levels, int* scales, int* mins, float& d, float& dmin) {
  k4_scales_mins(b + 4, scales, mins);
  for (int e = 0; e < 256; ++e) {
    const int group = e / 32, l = e % 32;
    const uint8_t byte = b[48 + 32 * (group / 2) + l];
    const int low = group % 2 ? byte >> 4 : byte & 0x0F;
    levels[e] = static_cast<uint8_t>(low | (((b[16 + l] >> group) & 1) << 4));
  }
  d = fp16_to_fp32(load_u16(b));
  dmin = fp16_to_fp32(load_u16(b + 2));
}

// Q6_K: ql[128], qh[64], 16 signed scales, d. In each 128-element half, element 32p + l takes
// nibble p / 2 of ql[l + 32 (p % 2)] and bits 2p..2p+1 of qh[l]; the value is level - 32.
void unpack_q6_k(const uint8_t* b, uint8_t* levels, int* scales, int* mins, float& d, float& dmin) {
  for (int g = 0; g < 16; ++g) {
    scales[g] = static_cast<int8_t>(b[192 + g]);
    mins[g] = 0;
  }
  for (int e = 0; e < 256; ++e) {
    const int half = e / 128, p = (e % 128) / 32, l = e % 32;
    const uint8_t lo_byte = b[64 * half + l + 32 * (p % 2)];
    const int low = p < 2 ? lo_byte & 0x0F : lo_byte >> 4;
    const int high = (b[128 + 32 * half + l] >> (2 * p)) & 3;
    levels[e] = static_cast<uint8_t>(low | (high << 4));
  }
  d = fp16_to_fp32(load_u16(b + 208));
  dmin = 0;
}

// 16-bit weights against fp32 activations, eight partial sums so the loop vectorises.
template <float (*Convert)(uint16_t)>
void dot_half(const uint8_t* row, int64_t cols, const uint8_t* act, int64_t act_stride, int n, float* out,
              int64_t out_stride) {
  for (int t = 0; t < n; ++t) {
    const auto* x = reinterpret_cast<const float*>(act + t * act_stride);
    float lanes[8] = {};
    int64_t i = 0;
    for (; i + 8 <= cols; i += 8)
      for (int u = 0; u < 8; ++u) lanes[u] += Convert(load_u16(row + 2 * (i + u))) * x[i + u];
    float acc = 0;
    for (; i < cols; ++i) acc += Convert(load_u16(row + 2 * i)) * x[i];
    for (int u = 0; u < 8; ++u) acc += lanes[u];
    out[t * out_stride] = acc;
  }
}

}  // namespace

void fill_scalar(Kernels& k) {
  k.q4_0 = dot_symmetric32<18, 8, false>;
  k.q4_1 = dot_with_min32<20, false>;
  k.q5_0 = dot_symmetric32<22, 16, true>;
  k.q5_1 = dot_with_min32<24, true>;
  k.q8_0 = dot_q8_0;
  k.q2_k = dot_k<84, 0, unpack_q2_k>;
  k.q3_k = dot_k<110, 4, unpack_q3_k>;
  k.q4_k = dot_k<144, 0, unpack_q4_k>;
  k.q5_k = dot_k<176, 0, unpack_q5_k>;
  k.q6_k = dot_k<210, 32, unpack_q6_k>;
  k.f16 = dot_half<fp16_to_fp32>;
  k.bf16 = dot_half<bf16_to_fp32>;
}

}  // namespace dms::cpu::quant
