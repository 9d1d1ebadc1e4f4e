#include "dms/model/linear.h"

#include "dms/util/error.h"
#include "dms/util/kept_tensor.h"

namespace dms {

LinearWeight LinearWeight::quantized_rows(at::Tensor bytes, GgmlType type, int64_t cols) {
  LinearWeight w;
  w.tensor = std::move(bytes);
  w.stored = type;
  w.cols = cols;
  return w;
}

LinearWeight LinearWeight::packed_rows(const at::Tensor& bytes, GgmlType type, int64_t cols) {
  LinearWeight w = quantized_rows(bytes, type, cols);
  if (!cpu::quant_pack_pays(type, cpu::default_cpu_isa()) || !cpu::quant_packable(w.matrix())) return w;
  auto packed = at::empty_like(bytes, at::MemoryFormat::Contiguous);
  cpu::quant_pack(w.matrix(), packed.data_ptr<uint8_t>());
  w.tensor = packed;
  w.packed = true;
  return w;
}

cpu::QuantMatrix LinearWeight::matrix() const {
  return {.type = stored, .rows = rows(), .cols = cols, .data = tensor.const_data_ptr<uint8_t>(), .packed = packed};
}

namespace {

// A new fp32 tensor of `shape`, or `buffer` where it is one (fp32, contiguous, that shape).
at::Tensor output(at::IntArrayRef shape, const at::Tensor& buffer) {
  const bool fits = buffer.defined() && buffer.device().is_cpu() && buffer.scalar_type() == at::kFloat &&
                    buffer.is_contiguous() && buffer.sizes() == shape;
  return fits ? buffer : at::empty(shape, at::kFloat);
}

// y [..., rows] += bias [rows]; a loop where both are plain fp32 (no ATen op in a decode step).
void add_bias(at::Tensor& y, const at::Tensor& bias) {
  if (!bias.defined()) return;
  if (bias.scalar_type() != at::kFloat || !bias.is_contiguous() || !bias.device().is_cpu() ||
      bias.numel() != y.size(-1) || bias.requires_grad())
    return void(y.add_(bias));
  const int64_t rows = y.size(-1);
  const float* b = bias.const_data_ptr<float>();
  float* p = y.data_ptr<float>();
  for (int64_t i = 0, n = y.numel(); i < n; ++i) p[i] += b[i % rows];
}

}  // namespace

at::Tensor linear(const at::Tensor& x, const LinearWeight& w, const at::Tensor& bias, const at::Tensor& buffer) {
  if (!w.quantized()) return at::linear(x, w.tensor, bias);
  if (x.dim() == 0 || x.size(-1) != w.cols)
    fail("linear", "input of " + std::to_string(x.dim() ? x.size(-1) : 0) + " features for a weight of " +
                       std::to_string(w.cols));
  at::DimVector shape(x.sizes());
  shape.back() = w.rows();
  // fp32 contiguous input (every decode step): straight into the output, with no ATen op between.
  const auto xf = float_contiguous(x);
  const bool plain = xf.is_same(x);
  auto y = output(shape, plain ? buffer : at::Tensor());
  cpu::quant_matmul(w.matrix(), xf.const_data_ptr<float>(), xf.numel() / w.cols, y.data_ptr<float>());
  add_bias(y, bias);
  return plain ? y : y.to(x.scalar_type());
}

std::vector<at::Tensor> linear_many(const at::Tensor& x, at::ArrayRef<const LinearWeight*> ws,
                                    at::ArrayRef<const at::Tensor*> biases, at::ArrayRef<at::Tensor> buffers) {
  const auto buffer = [&](size_t i) { return i < buffers.size() ? buffers[i] : at::Tensor(); };
  std::vector<at::Tensor> out;
  out.reserve(ws.size());
  bool fused = x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() > 0;
  for (const LinearWeight* w : ws) fused = fused && w->quantized() && w->cols == x.size(-1);
  if (!fused) {
    for (size_t i = 0; i < ws.size(); ++i) out.push_back(linear(x, *ws[i], *biases[i], buffer(i)));
    return out;
  }
  std::vector<cpu::QuantMatrix> matrices;
  std::vector<float*> ys;
  matrices.reserve(ws.size());
  ys.reserve(ws.size());
  for (size_t i = 0; i < ws.size(); ++i) {
    at::DimVector shape(x.sizes());
    shape.back() = ws[i]->rows();
    out.push_back(output(shape, buffer(i)));
    matrices.push_back(ws[i]->matrix());
    ys.push_back(out.back().data_ptr<float>());
  }
  cpu::quant_matmul_many(matrices, x.const_data_ptr<float>(), x.numel() / x.size(-1), ys);
  for (size_t i = 0; i < ws.size(); ++i) add_bias(out[i], *biases[i]);
  return out;
}

at::Tensor embedding(const LinearWeight& table, const at::Tensor& tokens, at::ScalarType dtype) {
  if (!table.quantized()) return at::embedding(table.tensor, tokens);
  const auto ids = tokens.to(at::kLong).contiguous();
  auto out = at::empty({ids.numel(), table.cols}, at::kFloat);
  const auto m = table.matrix();
  const int64_t* id = ids.const_data_ptr<int64_t>();
  for (int64_t t = 0; t < ids.numel(); ++t) {
    if (id[t] < 0 || id[t] >= m.rows)
      fail("embedding", "token id " + std::to_string(id[t]) + " is outside the vocabulary of " +
                            std::to_string(m.rows));
    cpu::quant_row(m, id[t], out.data_ptr<float>() + t * m.cols);
  }
  return out.to(dtype);
}

}  // namespace dms
