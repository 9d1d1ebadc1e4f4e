// dequantize_row: the block layouts of ggml's reference (non-SIMD) dequantizers. Every kernel
// works on whole blocks and reads multi-byte fields byte-wise, so any source alignment is fine.
// Multiply/add order follows ggml so results are bit-identical where the compiler does not fuse.
#include <cstring>
#include <string>

#include "dms/format/ggml_types.h"
#include "dms/format/half.h"
#include "dms/format/little_endian.h"
#include "dms/util/error.h"

namespace dms {
namespace {

constexpr int QK = 32;     // block size of the legacy quants
constexpr int QK_K = 256;  // super-block size of the K-quants

void dequant_f32(const uint8_t* src, float* dst, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

void dequant_f16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(load_u16(src + 2 * i));
}

void dequant_bf16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(src + 2 * i));
}

// Q4_0: fp16 d, 16 bytes of nibbles; low nibbles are elements 0..15, high nibbles 16..31.
void dequant_q4_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 18, y += QK) {
    const float d = fp16_to_fp32(load_u16(b));
    const uint8_t* qs = b + 2;
    for (int j = 0; j < QK / 2; ++j) {
      y[j] = static_cast<float>((qs[j] & 0x0F) - 8) * d;
      y[j + QK / 2] = static_cast<float>((qs[j] >> 4) - 8) * d;
    }
  }
}

// Q4_1: fp16 d, fp16 m (the block minimum), 16 bytes of nibbles.
void dequant_q4_1(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 20, y += QK) {
    const float d = fp16_to_fp32(load_u16(b));
    const float m = fp16_to_fp32(load_u16(b + 2));
    const uint8_t* qs = b + 4;
    for (int j = 0; j < QK / 2; ++j) {
      y[j] = static_cast<float>(qs[j] & 0x0F) * d + m;
      y[j + QK / 2] = static_cast<float>(qs[j] >> 4) * d + m;
    }
  }
}

// Q5_0: fp16 d, 32 fifth bits (u32, bit j for element j), 16 bytes of nibbles.
void dequant_q5_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 22, y += QK) {
    const float d = fp16_to_fp32(load_u16(b));
    const uint32_t qh = load_u32(b + 2);
    const uint8_t* qs = b + 6;
    for (int j = 0; j < QK / 2; ++j) {
      const int lo = (qs[j] & 0x0F) | static_cast<int>(((qh >> j) << 4) & 0x10);
      const int hi = (qs[j] >> 4) | static_cast<int>((qh >> (j + 12)) & 0x10);
      y[j] = static_cast<float>(lo - 16) * d;
      y[j + QK / 2] = static_cast<float>(hi - 16) * d;
    }
  }
}

// Q5_1: fp16 d, fp16 m, 32 fifth bits, 16 bytes of nibbles.
void dequant_q5_1(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 24, y += QK) {
    const float d = fp16_to_fp32(load_u16(b));
    const float m = fp16_to_fp32(load_u16(b + 2));
    const uint32_t qh = load_u32(b + 4);
    const uint8_t* qs = b + 8;
    for (int j = 0; j < QK / 2; ++j) {
      const int lo = (qs[j] & 0x0F) | static_cast<int>(((qh >> j) << 4) & 0x10);
      const int hi = (qs[j] >> 4) | static_cast<int>((qh >> (j + 12)) & 0x10);
      y[j] = static_cast<float>(lo) * d + m;
      y[j + QK / 2] = static_cast<float>(hi) * d + m;
    }
  }
}

// Q8_0: fp16 d, 32 signed bytes.
void dequant_q8_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 34, y += QK) {
    const float d = fp16_to_fp32(load_u16(b));
    for (int j = 0; j < QK; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
  }
}

// Q2_K: 16 bytes of 4-bit (scale, min) pairs, 64 bytes of 2-bit quants, fp16 d, fp16 dmin.
// Each 32-byte run of quants holds four 32-element groups, one per 2-bit plane.
void dequant_q2_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 84) {
    const uint8_t* scales = b;
    const uint8_t* q = b + 16;
    const float d = fp16_to_fp32(load_u16(b + 80));
    const float dmin = fp16_to_fp32(load_u16(b + 82));
    int is = 0;
    for (int n = 0; n < QK_K; n += 128, q += 32) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int half = 0; half < 2; ++half) {
          const uint8_t sc = scales[is++];
          const float dl = d * static_cast<float>(sc & 0x0F);
          const float ml = dmin * static_cast<float>(sc >> 4);
          for (int l = 0; l < 16; ++l) {
            *y++ = dl * static_cast<float>((q[l + 16 * half] >> shift) & 3) - ml;
          }
        }
      }
    }
  }
}

// Q3_K: 32 bytes of high bits, 64 bytes of low 2-bit quants, 12 bytes packing sixteen 6-bit
// scales (low nibbles in bytes 0..7, top two bits in bytes 8..11), fp16 d. A set high bit
// means no offset; a clear one subtracts 4.
void dequant_q3_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 110) {
    const uint8_t* hmask = b;
    const uint8_t* q = b + 32;
    const uint8_t* packed = b + 96;
    const float d_all = fp16_to_fp32(load_u16(b + 108));
    int8_t scales[16];
    for (int s = 0; s < 16; ++s) {
      const int low = s < 8 ? (packed[s] & 0x0F) : (packed[s - 8] >> 4);
      const int high = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
      scales[s] = static_cast<int8_t>((low | (high << 4)) - 32);
    }
    int is = 0;
    uint8_t m = 1;
    for (int n = 0; n < QK_K; n += 128, q += 32) {
      for (int shift = 0; shift < 8; shift += 2, m = static_cast<uint8_t>(m << 1)) {
        for (int half = 0; half < 2; ++half) {
          const float dl = d_all * static_cast<float>(scales[is++]);
          for (int l = 16 * half; l < 16 * half + 16; ++l) {
            const int v = ((q[l] >> shift) & 3) - ((hmask[l] & m) ? 0 : 4);
            *y++ = dl * static_cast<float>(v);
          }
        }
      }
    }
  }
}

// The eight 6-bit (scale, min) pairs of Q4_K and Q5_K, packed into 12 bytes.
void k4_scale_min(int j, const uint8_t* q, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = static_cast<uint8_t>((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
    m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Q4_K: fp16 d, fp16 dmin, 12 bytes of scales/mins, 128 bytes of nibbles; each 32-byte run
// holds two 32-element groups (low nibbles first).
void dequant_q4_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 144) {
    const float d = fp16_to_fp32(load_u16(b));
    const float dmin = fp16_to_fp32(load_u16(b + 2));
    const uint8_t* scales = b + 4;
    const uint8_t* q = b + 16;
    for (int j = 0, is = 0; j < QK_K; j += 64, q += 32, is += 2) {
      uint8_t sc, m;
      k4_scale_min(is, scales, sc, m);
      const float d1 = d * sc, m1 = dmin * m;
      k4_scale_min(is + 1, scales, sc, m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0x0F) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    }
  }
}

// Q5_K: as Q4_K plus 32 bytes of fifth bits (bit g of qh[l] for element 32*g + l).
void dequant_q5_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 176) {
    const float d = fp16_to_fp32(load_u16(b));
    const float dmin = fp16_to_fp32(load_u16(b + 2));
    const uint8_t* scales = b + 4;
    const uint8_t* qh = b + 16;
    const uint8_t* ql = b + 48;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < QK_K; j += 64, ql += 32, is += 2) {
      uint8_t sc, m;
      k4_scale_min(is, scales, sc, m);
      const float d1 = d * sc, m1 = dmin * m;
      k4_scale_min(is + 1, scales, sc, m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) {
        *y++ = d1 * static_cast<float>((ql[l] & 0x0F) + ((qh[l] & u1) ? 16 : 0)) - m1;
      }
      for (int l = 0; l < 32; ++l) {
        *y++ = d2 * static_cast<float>((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
      }
      u1 = static_cast<uint8_t>(u1 << 2);
      u2 = static_cast<uint8_t>(u2 << 2);
    }
  }
}

// Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed 8-bit scales (one
// per 16 elements), fp16 d. Each 128-element half uses 64 low bytes and 32 high bytes.
void dequant_q6_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 210) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = fp16_to_fp32(load_u16(b + 208));
    for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
        y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
    }
  }
}

}  // namespace

void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n) {
  if (!ggml_type_dequantizable(t)) fail("dequantize", "ggml type " + ggml_type_name(t) + " is not supported");
  const int64_t block = ggml_block_elems(t);
  if (n < 0 || n % block != 0) {
    fail("dequantize", std::to_string(n) + " elements is not a whole number of " + ggml_type_name(t) +
                           " blocks of " + std::to_string(block));
  }
  const auto* s = static_cast<const uint8_t*>(src);
  const int64_t nb = n / block;
  switch (t) {
    case GgmlType::F32: return dequant_f32(s, dst, n);
    case GgmlType::F16: return dequant_f16(s, dst, n);
    case GgmlType::BF16: return dequant_bf16(s, dst, n);
    case GgmlType::Q4_0: return dequant_q4_0(s, dst, nb);
    case GgmlType::Q4_1: return dequant_q4_1(s, dst, nb);
    case GgmlType::Q5_0: return dequant_q5_0(s, dst, nb);
    case GgmlType::Q5_1: return dequant_q5_1(s, dst, nb);
    case GgmlType::Q8_0: return dequant_q8_0(s, dst, nb);
    case GgmlType::Q2_K: return dequant_q2_k(s, dst, nb);
    case GgmlType::Q3_K: return dequant_q3_k(s, dst, nb);
    case GgmlType::Q4_K: return dequant_q4_k(s, dst, nb);
    case GgmlType::Q5_K: return dequant_q5_k(s, dst, nb);
    case GgmlType::Q6_K: return dequant_q6_k(s, dst, nb);
    default: break;
  }
  fail("dequantize", "ggml type " + ggml_type_name(t) + " has no dequantizer");
}

}  // namespace dms
