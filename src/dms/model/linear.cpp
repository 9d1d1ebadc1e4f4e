#include "dms/model/linear.h"

#include "dms/util/error.h"

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

at::Tensor linear(const at::Tensor& x, const LinearWeight& w, const at::Tensor& bias) {
  if (!w.quantized()) return at::linear(x, w.tensor, bias);
  if (x.dim() == 0 || x.size(-1) != w.cols)
    fail("linear", "input of " + std::to_string(x.dim() ? x.size(-1) : 0) + " features for a weight of " +
                       std::to_string(w.cols));
  at::DimVector shape(x.sizes());
  shape.back() = w.rows();
  // fp32 contiguous input (every decode step): straight into the output, with no ATen op between.
  const bool plain = x.scalar_type() == at::kFloat && x.is_contiguous();
  const auto xf = plain ? x : x.to(at::kFloat).contiguous();
  auto y = at::empty(shape, at::kFloat);
  cpu::quant_matmul(w.matrix(), xf.const_data_ptr<float>(), xf.numel() / w.cols, y.data_ptr<float>());
  if (bias.defined()) y.add_(bias);
  return plain ? y : y.to(x.scalar_type());
}

std::vector<at::Tensor> linear_many(const at::Tensor& x, const std::vector<const LinearWeight*>& ws,
                                    const std::vector<const at::Tensor*>& biases) {
  std::vector<at::Tensor> out;
  bool fused = x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() > 0;
  for (const LinearWeight* w : ws) fused = fused && w->quantized() && w->cols == x.size(-1);
  if (!fused) {
    for (size_t i = 0; i < ws.size(); ++i) out.push_back(linear(x, *ws[i], *biases[i]));
    return out;
  }
  std::vector<cpu::QuantMatrix> matrices;
  std::vector<float*> ys;
  for (const LinearWeight* w : ws) {
    at::DimVector shape(x.sizes());
    shape.back() = w->rows();
    out.push_back(at::empty(shape, at::kFloat));
    matrices.push_back(w->matrix());
    ys.push_back(out.back().data_ptr<float>());
  }
  cpu::quant_matmul_many(matrices, x.const_data_ptr<float>(), x.numel() / x.size(-1), ys);
  for (size_t i = 0; i < ws.size(); ++i)
    if (biases[i]->defined()) out[i].add_(*biases[i]);
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
