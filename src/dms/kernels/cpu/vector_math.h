// The inner loops of the CPU attention kernel, written so that the compiler vectorises them
// without -ffast-math: a dot product keeps eight independent partial sums (a float sum in one
// accumulator would have to be added in order, one lane at a time), and exp is a polynomial
// on explicit vectors, with no branches or library calls.
#pragma once
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>

namespace dms::cpu {

inline float dot(const float* a, const float* b, int64_t n) {
  float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) lanes[u] += a[i + u] * b[i + u];
  float tail = 0;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7])) + tail;
}

inline float sum(const float* x, int64_t n) {
  float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) lanes[u] += x[i + u];
  float tail = 0;
  for (; i < n; ++i) tail += x[i];
  return ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7])) + tail;
}

// The largest of x[0..n), n >= 1 (-inf when every element is).
inline float max_of(const float* x, int64_t n) {
  float lanes[8];
  for (int u = 0; u < 8; ++u) lanes[u] = x[0];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) lanes[u] = lanes[u] > x[i + u] ? lanes[u] : x[i + u];
  for (; i < n; ++i) lanes[0] = lanes[0] > x[i] ? lanes[0] : x[i];
  for (int u = 1; u < 8; ++u) lanes[0] = lanes[0] > lanes[u] ? lanes[0] : lanes[u];
  return lanes[0];
}

// y += a * x
inline void axpy(float* y, float a, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

inline void scale_in_place(float* y, float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] *= a;
}

using f32x4 = float __attribute__((vector_size(16)));
using i32x4 = int32_t __attribute__((vector_size(16)));

inline f32x4 load4(const float* p) {
  f32x4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store4(float* p, f32x4 v) { std::memcpy(p, &v, sizeof v); }
inline float sum4(f32x4 v) { return (v[0] + v[2]) + (v[1] + v[3]); }

// out[j] = dot(q, rows + j * stride) for j < n. Four rows at a time, so each piece of q is
// loaded once for four keys.
inline void dot_rows(const float* q, const float* rows, int64_t stride, int64_t n, int64_t dim, float* out) {
  const int64_t dim4 = dim - dim % 4;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const float *r0 = rows + j * stride, *r1 = r0 + stride, *r2 = r1 + stride, *r3 = r2 + stride;
    f32x4 s0{}, s1{}, s2{}, s3{};
    for (int64_t d = 0; d < dim4; d += 4) {
      const f32x4 qd = load4(q + d);
      s0 += qd * load4(r0 + d);
      s1 += qd * load4(r1 + d);
      s2 += qd * load4(r2 + d);
      s3 += qd * load4(r3 + d);
    }
    float t0 = sum4(s0), t1 = sum4(s1), t2 = sum4(s2), t3 = sum4(s3);
    for (int64_t d = dim4; d < dim; ++d) {
      t0 += q[d] * r0[d];
      t1 += q[d] * r1[d];
      t2 += q[d] * r2[d];
      t3 += q[d] * r3[d];
    }
    out[j] = t0;
    out[j + 1] = t1;
    out[j + 2] = t2;
    out[j + 3] = t3;
  }
  for (; j < n; ++j) out[j] = dot(q, rows + j * stride, dim);
}

// acc[d] += sum over j < n of w[j] * rows[j * stride + d]. Eight lanes of acc stay in
// registers across all the rows instead of being loaded and stored once per row.
inline void add_weighted_rows(float* acc, const float* w, const float* rows, int64_t stride, int64_t n, int64_t dim) {
  int64_t d = 0;
  for (; d + 8 <= dim; d += 8) {
    f32x4 a0 = load4(acc + d), a1 = load4(acc + d + 4);
    for (int64_t j = 0; j < n; ++j) {
      const float* r = rows + j * stride + d;
      a0 += w[j] * load4(r);
      a1 += w[j] * load4(r + 4);
    }
    store4(acc + d, a0);
    store4(acc + d + 4, a1);
  }
  for (; d < dim; ++d)
    for (int64_t j = 0; j < n; ++j) acc[d] += w[j] * rows[j * stride + d];
}

// exp(d) for d <= 0, four lanes at a time (GCC/Clang vector extensions, SSE2 at least):
// exp(r) for |r| <= ln2/2 by its degree-6 Taylor polynomial (relative error about 2e-7, two
// float ulps at most), scaled by 2^k through the exponent bits. Below -87 (where 2^k would
// leave the normal range), and for -inf, the result is 0, which cannot change a softmax whose
// largest weight is 1.
inline f32x4 exp_nonpositive(f32x4 d) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const i32x4 in_range = d >= -87.0f;
  const f32x4 v = in_range ? d : f32x4{} - 87.0f;
  const f32x4 k = (v * kLog2e + kRound) - kRound;
  const f32x4 r = (v - k * kLn2Hi) - k * kLn2Lo;
  f32x4 p = f32x4{} + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const i32x4 exponent = (__builtin_convertvector(k, i32x4) + 127) << 23;
  const f32x4 result = p * std::bit_cast<f32x4>(exponent);
  return in_range ? result : f32x4{};
}

// x[i] <- exp(x[i] - shift) for x[i] <= shift; exactly 0 where x[i] is -inf (a hidden key).
inline void exp_shifted(float* x, float shift, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    f32x4 v;
    std::memcpy(&v, x + i, sizeof v);
    v = exp_nonpositive(v - shift);
    std::memcpy(x + i, &v, sizeof v);
  }
  if (i < n) {
    f32x4 v = f32x4{} - std::numeric_limits<float>::infinity();
    std::memcpy(&v, x + i, (n - i) * sizeof(float));
    v = exp_nonpositive(v - shift);
    std::memcpy(x + i, &v, (n - i) * sizeof(float));
  }
}

}  // namespace dms::cpu
