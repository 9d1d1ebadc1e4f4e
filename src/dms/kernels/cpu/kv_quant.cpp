#include "dms/kernels/cpu/kv_quant.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "dms/format/half.h"
#include "dms/kernels/cpu/parallel.h"
#include "dms/util/error.h"
#include "dms/util/kept_tensor.h"

namespace dms::cpu {

int64_t kv_row_bytes(at::ScalarType dtype, int64_t head_dim) {
  switch (dtype) {
    case at::kFloat: return 4 * head_dim;
    case at::kBFloat16:
    case at::kHalf: return 2 * head_dim;
    case kQ8: return head_dim + 2 * (head_dim / q8_group(head_dim));
    default: fail("kv cache", std::string("KV dtype must be f32, bf16, f16 or q8, got ") + c10::toString(dtype));
  }
}

std::string kv_dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "f32";
    case at::kBFloat16: return "bf16";
    case at::kHalf: return "f16";
    case kQ8: return "q8";
    default: return c10::toString(dtype);
  }
}

std::optional<at::ScalarType> kv_dtype_from_name(const std::string& name) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf, kQ8})
    if (kv_dtype_name(dtype) == name) return dtype;
  return std::nullopt;
}

void quantize_q8_row(const float* x, int64_t head_dim, uint8_t* out) {
  const int64_t group = q8_group(head_dim);
  auto* levels = reinterpret_cast<int8_t*>(out);
  uint8_t* scales = out + head_dim;
  for (int64_t g = 0; g < head_dim / group; ++g) {
    const float* xg = x + g * group;
    float absmax = 0;
    for (int64_t i = 0; i < group; ++i) absmax = std::max(absmax, std::fabs(xg[i]));
    const c10::Half scale(absmax / 127.0f);
    const float s = static_cast<float>(scale);
    for (int64_t i = 0; i < group; ++i) {
      // A division, not a product with 1 / s: rounds as the rule says. A zero group stores zeros,
      // and a non-finite value (a broken forward) level 0 rather than an undefined conversion.
      const float l = s > 0 ? std::clamp(std::nearbyint(xg[i] / s), -127.0f, 127.0f) : 0.0f;
      levels[g * group + i] = std::isfinite(l) ? static_cast<int8_t>(l) : 0;
    }
    std::memcpy(scales + 2 * g, &scale.x, 2);
  }
}

void dequantize_q8_row(const uint8_t* row, int64_t head_dim, float* out) {
  const int64_t group = q8_group(head_dim);
  const auto* levels = reinterpret_cast<const int8_t*>(row);
  for (int64_t g = 0; g < head_dim / group; ++g) {
    uint16_t bits;
    std::memcpy(&bits, row + head_dim + 2 * g, 2);
    const float s = fp16_to_fp32(bits);
    for (int64_t i = g * group; i < (g + 1) * group; ++i) out[i] = static_cast<float>(levels[i]) * s;
  }
}

at::Tensor to_kv_rows(const at::Tensor& x, at::ScalarType dtype, at::Tensor* kept) {
  const auto make = [&](at::IntArrayRef shape, at::ScalarType type) {
    return kept ? kept_or_empty(*kept, shape, type) : at::empty(shape, at::TensorOptions().dtype(type));
  };
  if (dtype != kQ8) {
    kv_row_bytes(dtype, 1);  // rejects other dtypes
    if (x.scalar_type() != at::kFloat || !x.is_contiguous() || !x.device().is_cpu()) {
      at::Tensor rows = x.to(dtype).contiguous();
      return rows.is_alias_of(x) ? rows.clone() : rows;
    }
    // fp32 rows of a decode step: converted in a loop, rounding as ATen's conversions do.
    at::Tensor rows = make(x.sizes(), dtype);
    const float* s = x.const_data_ptr<float>();
    const int64_t n = x.numel();
    if (dtype == at::kFloat) std::memcpy(rows.data_ptr<float>(), s, n * sizeof(float));
    if (dtype == at::kBFloat16) std::copy(s, s + n, rows.data_ptr<at::BFloat16>());
    if (dtype == at::kHalf) std::copy(s, s + n, rows.data_ptr<at::Half>());
    return rows;
  }
  const int64_t D = x.size(-1), row_bytes = kv_row_bytes(kQ8, D);
  const at::Tensor src = float_contiguous(x);
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = row_bytes;
  at::Tensor rows = make(shape, at::kChar);
  const int64_t n = D > 0 ? src.numel() / D : 0;
  const float* s = src.data_ptr<float>();
  auto* r = reinterpret_cast<uint8_t*>(rows.data_ptr());
  parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) quantize_q8_row(s + i * D, D, r + i * row_bytes);
  });
  return rows;
}

at::Tensor kv_rows_to_float(const at::Tensor& rows, at::ScalarType dtype, int64_t head_dim) {
  if (dtype != kQ8) return rows.to(at::kFloat);
  const int64_t row_bytes = kv_row_bytes(kQ8, head_dim);
  if (rows.size(-1) != row_bytes)
    fail("kv cache", "q8 rows of " + std::to_string(head_dim) + " values take " + std::to_string(row_bytes) +
                         " bytes, got rows of " + std::to_string(rows.size(-1)));
  const at::Tensor src = rows.contiguous();
  std::vector<int64_t> shape(rows.sizes().begin(), rows.sizes().end());
  shape.back() = head_dim;
  at::Tensor out = at::empty(shape, at::kFloat);
  const int64_t n = src.numel() / row_bytes;
  const auto* r = reinterpret_cast<const uint8_t*>(src.data_ptr());
  float* o = out.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) dequantize_q8_row(r + i * row_bytes, head_dim, o + i * head_dim);
  return out;
}

}  // namespace dms::cpu
