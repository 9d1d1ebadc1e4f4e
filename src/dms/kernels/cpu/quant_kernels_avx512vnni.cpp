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
}  // namespace

void fill_avx512_vnni(Kernels& k) {
  k.packed_q4_0_i16 = Packed32<PackedKind::Q4_0>::dot;
  k.packed_q4_1_i16 = Packed32<PackedKind::Q4_1>::dot;
  k.packed_q8_0_i16 = Packed32<PackedKind::Q8_0>::dot;
  k.act_bytes = true;
}

}  // namespace dms::cpu::quant
#else
namespace dms::cpu::quant {
void fill_avx512_vnni(Kernels&) {}
}  // namespace dms::cpu::quant
#endif
