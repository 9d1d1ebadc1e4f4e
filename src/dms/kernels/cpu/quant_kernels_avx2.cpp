// The x86 row kernels built for AVX2 + FMA + F16C. Only <immintrin.h> and
// plain-data headers here: see quant_blocks.h for why.
#include <cstdint>
#include <cstring>

#include "dms/kernels/cpu/quant_blocks.h"

#if defined(__x86_64__)
#include <immintrin.h>

namespace dms::cpu::quant {
namespace {
#include "dms/kernels/cpu/quant_kernels_x86.inc"
}  // namespace

void fill_avx2(Kernels& k) { fill_x86(k); }

}  // namespace dms::cpu::quant
#else
namespace dms::cpu::quant {
void fill_avx2(Kernels&) {}  // not an x86 CPU: cpu_isa_supported() never selects it
}  // namespace dms::cpu::quant
#endif
