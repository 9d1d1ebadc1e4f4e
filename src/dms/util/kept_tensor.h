// A tensor kept between calls to hold the next call's result, so that a decode step, which
// makes results of the same shapes every time, allocates none; and fp32 inputs taken as they are.
#pragma once
#include <ATen/ATen.h>

namespace dms {

// `kept`, when it has `sizes` and `dtype` and nothing else holds it or its memory (no caller
// still reads an earlier result through it or a view of it); otherwise a new tensor, kept from
// now on. Contiguous, on the CPU, values undefined.
inline at::Tensor kept_or_empty(at::Tensor& kept, at::IntArrayRef sizes, at::ScalarType dtype) {
  const bool reusable = kept.defined() && kept.scalar_type() == dtype && kept.sizes() == sizes &&
                        kept.use_count() == 1 && kept.storage().use_count() == 1;
  if (!reusable) kept = at::empty(sizes, at::TensorOptions().dtype(dtype));
  return kept;
}

// `t` itself where it is fp32 and contiguous (a decode step's tensors: no copy, no ATen op), else
// an fp32 contiguous copy; undefined stays undefined.
inline at::Tensor float_contiguous(const at::Tensor& t) {
  if (!t.defined() || (t.scalar_type() == at::kFloat && t.is_contiguous())) return t;
  return t.to(at::kFloat).contiguous();
}

}  // namespace dms
