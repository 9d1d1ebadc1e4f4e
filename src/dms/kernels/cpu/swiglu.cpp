#include "dms/kernels/cpu/swiglu.h"

#include <ATen/TensorIterator.h>
#include <ATen/Version.h>

#include <cmath>

#include "dms/kernels/cpu/attention_rows.h"
#include "dms/kernels/cpu/quant_matmul.h"

namespace dms::cpu {
namespace {

// The vector loop of ATen's CPU capability (ATEN_CPU_CAPABILITY may lower it), where this CPU runs it.
attn::SwigluFn aten_swiglu_loop() {
  const std::string capability = at::get_cpu_capability();
  attn::Kernels k;
  if (capability == "AVX512" && cpu_isa_supported(CpuIsa::Avx512)) attn::fill_avx512(k);
  if (capability == "AVX2" && cpu_isa_supported(CpuIsa::Avx2)) attn::fill_avx2(k);
  return k.swiglu;
}

}  // namespace

void swiglu_in_place(const at::Tensor& gate, const at::Tensor& up) {
  static const attn::SwigluFn loop = aten_swiglu_loop();
  float* g = gate.data_ptr<float>();
  const float* u = up.const_data_ptr<float>();
  const int64_t n = gate.numel();
  // From GRAIN_SIZE elements on, ATen splits the tensor across threads, each part with its own tail.
  const int64_t done = loop && n < at::internal::GRAIN_SIZE ? loop(g, u, n) : -1;
  if (done < 0) {
    at::Tensor in_place = gate;
    at::silu_(in_place);
    for (int64_t i = 0; i < n; ++i) g[i] *= u[i];
    return;
  }
  for (int64_t i = done; i < n; ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];  // ATen's scalar tail
}

}  // namespace dms::cpu
