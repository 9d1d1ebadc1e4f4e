// The x86 attention inner loops built for AVX2, FMA and F16C (see CMakeLists.txt for the flags). Only
// <immintrin.h> and plain-data headers here: see quant_blocks.h for why.
#include <cstdint>
#include <cstring>

#include "dms/kernels/cpu/attention_rows.h"

#if defined(__x86_64__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

namespace dms::cpu::attn {
namespace {
#include "dms/kernels/cpu/attention_kernels_x86.inc"
}  // namespace

void fill_avx2(Kernels& k) { fill_x86(k); }

}  // namespace dms::cpu::attn
#else
namespace dms::cpu::attn {
void fill_avx2(Kernels&) {}  // not an x86 CPU: never selected
}  // namespace dms::cpu::attn
#endif
