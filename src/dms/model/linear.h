// A linear layer's weight, float or as a GGUF file stores it, and the one `linear(x, w)` that
// chooses how to multiply by it: the forward stays one code path for both.
#pragma once
#include <ATen/ATen.h>

#include <vector>

#include "dms/format/ggml_types.h"
#include "dms/kernels/cpu/quant_matmul.h"

namespace dms {

// A weight [out, in]: float (training, Hugging Face checkpoints, F32 GGUF tensors), or rows of
// ggml blocks or 16-bit floats read in place from a mapped GGUF file (inference), so a decode
// step reads the file's bytes rather than an fp32 copy four to eight times their size.
struct LinearWeight {
  at::Tensor tensor;                // float [out, in]; uint8 [out, row bytes] when quantized()
  GgmlType stored = GgmlType::F32;  // the rows' ggml type; F32: `tensor` holds float weights
  int64_t cols = 0;                 // `in`, when quantized()
  bool packed = false;              // the rows regrouped by cpu::quant_pack (same bytes, reordered)

  LinearWeight() = default;
  LinearWeight(at::Tensor float_weight) : tensor(std::move(float_weight)) {}  // NOLINT: implicit, a float tensor is a weight
  // Rows of `type` as stored: bytes [out, ggml_row_bytes(type, cols)].
  static LinearWeight quantized_rows(at::Tensor bytes, GgmlType type, int64_t cols);
  // The same, packed (cpu::quant_pack) into new memory where the shape allows it and packing
  // pays on this CPU (cpu::quant_pack_pays); otherwise `bytes` as they are.
  static LinearWeight packed_rows(const at::Tensor& bytes, GgmlType type, int64_t cols);

  bool defined() const { return tensor.defined(); }
  bool quantized() const { return stored != GgmlType::F32; }
  int64_t rows() const { return tensor.size(0); }
  int64_t columns() const { return quantized() ? cols : tensor.size(1); }
  int64_t numel() const { return rows() * columns(); }  // weights, not bytes
  int64_t nbytes() const { return static_cast<int64_t>(tensor.nbytes()); }
  bool is_same(const LinearWeight& other) const { return tensor.is_same(other.tensor); }
  cpu::QuantMatrix matrix() const;  // quantized() only
};

// x [..., in] times w^T plus `bias` (may be undefined) -> [..., out], in x's dtype. Quantized
// weights multiply in fp32 (kernels/cpu/quant_matmul.h) on the CPU and are not differentiable.
// `buffer` (may be undefined): an fp32 contiguous tensor of the result's shape that a quantized
// weight's fp32 result is written into and returned, instead of a new tensor (the forward's
// decode steps allocate nothing per layer); any other result is new.
at::Tensor linear(const at::Tensor& x, const LinearWeight& w, const at::Tensor& bias = {},
                  const at::Tensor& buffer = {});

// linear(x, ws[i], biases[i], buffers[i]) for each i (biases and buffers may be undefined, buffers
// empty): where all the weights are quantized and x is fp32, one cpu::quant_matmul_many (x
// quantized once, one pass of the threads).
std::vector<at::Tensor> linear_many(const at::Tensor& x, at::ArrayRef<const LinearWeight*> ws,
                                    at::ArrayRef<const at::Tensor*> biases, at::ArrayRef<at::Tensor> buffers = {});

// Rows `tokens` [T] of the table [V, H] -> [T, H] in `dtype` (the table's own for float tables).
at::Tensor embedding(const LinearWeight& table, const at::Tensor& tokens, at::ScalarType dtype);

}  // namespace dms
