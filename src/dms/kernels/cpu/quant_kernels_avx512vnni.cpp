// The packed-layout kernels built for AVX-512 with VNNI (see CMakeLists.txt for the flags): the
// 16-bit multiply-adds and their sums become one vpdpwssd. Only <immintrin.h> and plain-data
// headers here: see quant_blocks.h for why.
#include <cstdint>
#include <cstring>

#include "dms/kernels/cpu/quant_blocks.h"

#if defined(__x86_64__)
#pragma GCC diagnostic ignored "-Wuninitialized"  // as in quant_kernels_avx512.cpp
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

namespace dms::cpu::quant {
namespace {
#include "dms/kernels/cpu/quant_packed_x86.inc"

// ActRows::bytes: each 16-bit level is its low byte then its high byte (little-endian), so one
// byte shuffle per 8 levels (four per 512-bit vector, lane by lane) puts them in place.
void split_levels(const int16_t* q, int64_t count, uint8_t* bytes) {
  const __m128i order = _mm_setr_epi8(0, 8, 2, 10, 4, 12, 6, 14, 1, 9, 3, 11, 5, 13, 7, 15);
  const __m512i order4 = _mm512_broadcast_i32x4(order);
  int64_t i = 0;
  for (; i + 32 <= count; i += 32)
    _mm512_storeu_si512(bytes + 2 * i, _mm512_shuffle_epi8(_mm512_loadu_si512(q + i), order4));
  for (; i < count; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(bytes + 2 * i),
                     _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i)), order));
}
}  // namespace

void fill_avx512_vnni(Kernels& k) {
  k.packed_q4_0_i16 = Packed32<PackedKind::Q4_0>::dot;
  k.packed_q4_1_i16 = Packed32<PackedKind::Q4_1>::dot;
  k.packed_q8_0_i16 = Packed32<PackedKind::Q8_0>::dot;
  k.split_levels = split_levels;
}

}  // namespace dms::cpu::quant
#else
namespace dms::cpu::quant {
void fill_avx512_vnni(Kernels&) {}
}  // namespace dms::cpu::quant
#endif
