// The x86 row kernels built for AVX-512 F/BW/VL (see CMakeLists.txt for the flags). Only <immintrin.h> and
// plain-data headers here: see quant_blocks.h for why.
#include <cstdint>
#include <cstring>

#include "dms/kernels/cpu/quant_blocks.h"

#if defined(__x86_64__)
// GCC 12's avx512fintrin.h seeds its unmasked conversions with _mm512_undefined_*(), which
// -W(maybe-)uninitialized reports once inlined here: a false positive.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

namespace dms::cpu::quant {
namespace {
#include "dms/kernels/cpu/quant_kernels_x86.inc"
}  // namespace

void fill_avx512(Kernels& k) { fill_x86(k); }

}  // namespace dms::cpu::quant
#else
namespace dms::cpu::quant {
void fill_avx512(Kernels&) {}  // not an x86 CPU: cpu_isa_supported() never selects it
}  // namespace dms::cpu::quant
#endif
