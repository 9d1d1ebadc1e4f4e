// The team of threads behind parallel_chunks (parallel.h).
//
// Each worker has its own mailbox: the caller writes a worker's job and then bumps its sequence
// number, and the worker, spinning on that number, runs the job and counts down the region's
// pending count, on which the caller waits once its own share is done. A worker that has found no
// job for kSpin sleeps on a futex (std::atomic::wait) and is woken by the next job; an idle process
// keeps no core busy. The team is as large as the biggest region asked of it, less the caller, and
// lives until the process ends.
#include "dms/kernels/cpu/parallel.h"

#include <omp.h>
#include <pthread.h>
#include <sched.h>

#include <chrono>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "dms/kernels/cpu/paged_attention.h"
#include "dms/kernels/cpu/quant_matmul.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

// MKL's own per-thread count (libtorch_cpu exports it where it links MKL; absent elsewhere):
// returns the previous one, 0 for none. The C function; mkl_set_num_threads_local (lower case) is
// the Fortran one, which takes a pointer.
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));

namespace dms::cpu {
namespace {

// Decode regions come a few microseconds apart, and the next decode step comes within tens of
// microseconds of the last one's end: a worker that spins for half a millisecond sleeps only when
// decoding stops (or a prefill chunk runs on OpenMP, whose threads then have the cores to
// themselves after that half millisecond).
constexpr auto kSpin = std::chrono::microseconds(500);

thread_local bool t_in_team = false;
thread_local int t_team_threads = 0;  // inside a TeamScope: the team's thread count

// One turn of a spin: a pause, or where the team has more threads than the process has cores
// (--threads above the core count), the core itself, so that a spinning thread does not keep the
// one with work off it (libgomp shortens its spin for the same reason).
inline void relax(bool crowded) {
  if (crowded) return std::this_thread::yield();
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

int cores_available() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return static_cast<int>(std::thread::hardware_concurrency());
  return CPU_COUNT(&set);
}

struct alignas(64) Worker {
  std::atomic<uint32_t> seq{0};
  std::atomic<bool> sleeping{false};
  void (*fn)(void*) = nullptr;  // written by the caller before seq, read by the worker after it
  void* ctx = nullptr;
  std::thread thread;
};

class Team {
 public:
  // Runs fn on the caller and on up to threads - 1 workers.
  void run(int threads, void (*fn)(void*), void* ctx) {
    if (busy_.exchange(true, std::memory_order_acquire)) return fn(ctx);  // another thread's region
    struct Release {
      Team* t;
      ~Release() { t->busy_.store(false, std::memory_order_release); }
    } release{this};
    grow(threads - 1);
    static const int cores = cores_available();
    crowded_.store(threads > cores, std::memory_order_relaxed);
    const int helpers = threads - 1;
    error_ = nullptr;
    pending_.store(helpers, std::memory_order_relaxed);
    for (int i = 0; i < helpers; ++i) {
      Worker& w = *workers_[i];
      w.fn = fn;
      w.ctx = ctx;
      w.seq.fetch_add(1, std::memory_order_seq_cst);
      if (w.sleeping.load(std::memory_order_seq_cst)) w.seq.notify_one();
    }
    t_in_team = true;
    try {
      fn(ctx);
    } catch (...) {
      record(std::current_exception());
    }
    t_in_team = false;
    join();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void grow(int workers) {
    while (static_cast<int>(workers_.size()) < workers) {
      workers_.push_back(std::make_unique<Worker>());
      Worker* w = workers_.back().get();
      w->thread = std::thread([this, w] { loop(*w); });
      w->thread.detach();  // the team lives until the process ends
    }
  }

  // Not inlined, so that a profile names the time the caller waits for the workers.
  [[gnu::noinline]] void join() {
    const auto start = std::chrono::steady_clock::now();
    const bool crowded = crowded_.load(std::memory_order_relaxed);
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
      relax(crowded);
      // A worker that lost its core (more threads than cores) is waited for without the spin.
      if (spins % 256 == 255 && std::chrono::steady_clock::now() - start > kSpin) std::this_thread::yield();
    }
  }

  [[gnu::noinline]] uint32_t wait_for_job(Worker& w, uint32_t seen) {
    auto start = std::chrono::steady_clock::now();
    const bool crowded = crowded_.load(std::memory_order_relaxed);  // the last region's
    for (int spins = 0;; ++spins) {
      const uint32_t seq = w.seq.load(std::memory_order_acquire);
      if (seq != seen) return seq;
      relax(crowded);
      if (spins % 256 != 255 || std::chrono::steady_clock::now() - start < kSpin) continue;
      w.sleeping.store(true, std::memory_order_seq_cst);
      w.seq.wait(seen, std::memory_order_seq_cst);
      w.sleeping.store(false, std::memory_order_relaxed);
      start = std::chrono::steady_clock::now();
    }
  }

  void loop(Worker& w) {
    t_in_team = true;
    for (uint32_t seen = 0;;) {
      seen = wait_for_job(w, seen);
      try {
        w.fn(w.ctx);
      } catch (...) {
        record(std::current_exception());
      }
      pending_.fetch_sub(1, std::memory_order_release);
    }
  }

  void record(std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(error_mu_);
    if (!error_) error_ = std::move(e);
  }

  std::atomic<bool> busy_{false};
  // The last region has more threads than the process has cores. Read once per wait, on a line of
  // its own: the caller writes busy_ and pending_ every region.
  alignas(64) std::atomic<bool> crowded_{false};
  alignas(64) std::atomic<int> pending_{0};
  std::vector<std::unique_ptr<Worker>> workers_;  // grown only by the thread holding busy_
  std::mutex error_mu_;
  std::exception_ptr error_;
};

// Never destroyed: its detached workers use it until the process ends. A child of fork() has none
// of its parent's workers, and starts a team of its own.
Team* g_team = nullptr;

Team& team() {
  static const bool made = [] {
    g_team = new Team;
    return pthread_atfork(nullptr, nullptr, [] { g_team = new Team; }) == 0;
  }();
  (void)made;
  return *g_team;
}

}  // namespace

void team_run(int threads, void (*fn)(void*), void* ctx) {
  if (threads <= 1 || t_in_team) return fn(ctx);
  team().run(threads, fn, ctx);
}

bool in_team() { return t_in_team; }

TeamScope::TeamScope(bool on) : saved_threads_(t_team_threads) {
  if (!on || t_team_threads > 0) return;
  const int threads = at::get_num_threads();  // also sets this thread's OpenMP count, once
  if (threads <= 1) return;
  t_team_threads = threads;
  omp_set_num_threads(1);
  if (MKL_Set_Num_Threads_Local) saved_mkl_ = MKL_Set_Num_Threads_Local(1);
}

TeamScope::~TeamScope() {
  if (t_team_threads == saved_threads_) return;
  omp_set_num_threads(t_team_threads);
  if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(saved_mkl_);
  t_team_threads = saved_threads_;
}

bool in_team_scope() { return t_team_threads > 0; }
bool team_step(int64_t rows, int64_t longest) { return rows < kBatchedMinRows && longest < kBlasMinQueries; }
int region_threads() { return t_team_threads > 0 ? t_team_threads : at::get_num_threads(); }

}  // namespace dms::cpu
