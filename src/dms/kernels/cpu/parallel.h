// Work split across threads in chunks that each thread takes one at a time, until none is left.
// A static split (at::parallel_for's own) makes every thread wait at the end of the region for the
// one that was woken last or was slowed down; here that thread takes fewer chunks, and the others
// wait at most one chunk's time.
//
// The threads are either OpenMP's (at::parallel_for) or a team of dms's own (parallel.cpp). A
// decode step runs about five parallel regions per layer, a few microseconds apart, and an OpenMP
// region's start and join cost a few microseconds each; the team's workers spin between regions,
// so a region costs the caller a store per worker and a counter to wait on. The two must not take
// turns: each spins on the cores for a while after its last region (libgomp for milliseconds), so
// regions of the other wait for a core. Hence the team runs only the regions of a step that runs
// no OpenMP at all, marked by a TeamScope (Engine::step opens one for decode-sized steps), and
// the work of a team region must not start parallel work of its own (ATen ops that split across
// threads, BLAS). Everywhere else the regions run on OpenMP as before.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace dms::cpu {

// Team: on the team inside an open TeamScope, else on OpenMP. OpenMP: always on OpenMP (work
// that calls BLAS).
enum class Threads { Team, OpenMP };

// Marks the calling thread's regions, until it ends, as team regions (when `on` and libtorch has
// more than one thread). Meanwhile the thread's OpenMP and MKL thread counts are 1, so that no
// ATen op or MKL function of the step (at::sin over a batch's RoPE angles is one: MKL's VML
// threads it) starts an OpenMP region beside the team; the team has libtorch's thread count.
class TeamScope {
 public:
  explicit TeamScope(bool on);
  ~TeamScope();
  TeamScope(const TeamScope&) = delete;
  TeamScope& operator=(const TeamScope&) = delete;

 private:
  int saved_threads_;  // the team's thread count before: 0 outside a scope
  int saved_mkl_ = 0;
};
bool in_team_scope();
// Whether a forward step of `rows` tokens, at most `longest` of one sequence, is decode-sized: its
// matmuls take the decode path (fewer rows than kBatchedMinRows) and its attention calls no BLAS
// (fewer queries of a sequence than kBlasMinQueries). Such steps open a TeamScope.
bool team_step(int64_t rows, int64_t longest);
// Threads a region may use: the team's inside a TeamScope, else libtorch's.
int region_threads();

// Runs fn(ctx) on `threads` threads at once, the calling thread among them, and returns when every
// call has returned; rethrows the first exception one threw. Fewer threads run it when the team is
// busy (another thread's region) or smaller, so fn must be correct on any number of threads.
void team_run(int threads, void (*fn)(void*), void* ctx);
// On a team worker, or on a thread inside team_run.
bool in_team();

// Calls fn(begin, end) for the chunks [0, chunk), [chunk, 2 chunk), ... of [0, n), each once, on
// as many threads as there are chunks (at most region_threads()); serially inside a parallel
// region of either kind.
template <typename Fn>
void parallel_chunks(int64_t n, int64_t chunk, const Fn& fn, Threads where = Threads::Team) {
  if (n <= 0) return;
  chunk = std::max<int64_t>(chunk, 1);
  const int64_t chunks = (n + chunk - 1) / chunk;
  const int64_t workers = std::min<int64_t>(chunks, region_threads());
  if (workers <= 1 || at::in_parallel_region() || in_team()) return fn(int64_t{0}, n);
  std::atomic<int64_t> next{0};
  auto body = [&] {
    for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
         c = next.fetch_add(1, std::memory_order_relaxed))
      fn(c * chunk, std::min(n, (c + 1) * chunk));
  };
  if (where == Threads::OpenMP || !in_team_scope())
    return at::parallel_for(0, workers, 1, [&](int64_t, int64_t) { body(); });
  team_run(static_cast<int>(workers), [](void* b) { (*static_cast<decltype(body)*>(b))(); }, &body);
}

// at::parallel_for's split (at most one range per thread, none smaller than grain), on the threads
// parallel_chunks chooses.
template <typename Fn>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const Fn& fn, Threads where = Threads::Team) {
  const int64_t n = end - begin, threads = region_threads();
  if (n <= 0) return;
  const int64_t ranges = std::min(threads, std::max<int64_t>(1, (n + grain - 1) / std::max<int64_t>(grain, 1)));
  parallel_chunks(n, (n + ranges - 1) / ranges, [&](int64_t b, int64_t e) { fn(begin + b, begin + e); }, where);
}

}  // namespace dms::cpu
