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
  auto shape = x.sizes().vec();
  shape.back() = w.rows();
  const auto xf = x.reshape({-1, w.cols}).to(at::kFloat).contiguous();
  auto y = at::empty({xf.size(0), w.rows()}, at::kFloat);
  cpu::quant_matmul(w.matrix(), xf.const_data_ptr<float>(), xf.size(0), y.data_ptr<float>());
  if (bias.defined()) y.add_(bias);
  return y.view(shape).to(x.scalar_type());
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
