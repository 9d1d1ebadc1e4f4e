// SwiGLU's activation on the CPU: the gate becomes silu(gate) * up, in place, in fp32.
#pragma once
#include <ATen/ATen.h>

namespace dms::cpu {

// gate = silu(gate) * up for two contiguous fp32 tensors of one size. silu gives exactly the values
// of ATen's at::silu on this machine (the 16-bit activations of the next matmul then quantize the
// same values transformers' forward makes): with the vector loop of ATen's own CPU capability where
// libtorch exports SLEEF's exp and ATen would run the tensor in one piece, else with at::silu_.
void swiglu_in_place(const at::Tensor& gate, const at::Tensor& up);

}  // namespace dms::cpu
