// The inner loops of the CPU attention kernel, written so that the compiler vectorises them
// without -ffast-math: a dot product keeps eight independent partial sums (a float sum in one
// accumulator would have to be added in order, one lane at a time).
#pragma once
#include <cstdint>

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

// y += a * x
inline void axpy(float* y, float a, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

inline void scale_in_place(float* y, float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] *= a;
}

}  // namespace dms::cpu
