// Work split across at::parallel_for's threads in chunks that each thread takes one at a time,
// until none is left. A static split (at::parallel_for's own) makes every thread wait at the end of
// the region for the one that was woken last or was slowed down; here that thread takes fewer
// chunks, and the others wait at most one chunk's time.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace dms::cpu {

// Calls fn(begin, end) for the chunks [0, chunk), [chunk, 2 chunk), ... of [0, n), each once, on
// as many threads as there are chunks (at most at::get_num_threads()); serially inside a parallel
// region.
template <typename Fn>
void parallel_chunks(int64_t n, int64_t chunk, const Fn& fn) {
  if (n <= 0) return;
  chunk = std::max<int64_t>(chunk, 1);
  const int64_t chunks = (n + chunk - 1) / chunk;
  const int64_t workers = std::min<int64_t>(chunks, at::get_num_threads());
  if (workers <= 1 || at::in_parallel_region()) return fn(int64_t{0}, n);
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
         c = next.fetch_add(1, std::memory_order_relaxed))
      fn(c * chunk, std::min(n, (c + 1) * chunk));
  });
}

}  // namespace dms::cpu
