#include "machine_probe.h"

#include <ATen/Parallel.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

namespace dms::cli {
namespace {

// Chunks big enough that thread start-up is noise next to the memory traffic.
constexpr int64_t kGrain = int64_t{1} << 16;

// Where the kernels' results go, so that neither pass can be optimised away.
volatile double g_sink = 0;

double seconds_of(auto&& body) {
  const auto t0 = std::chrono::steady_clock::now();
  body();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// "VmHWM:    12345 kB" -> bytes; 0 when the field is missing.
int64_t status_field(const std::string& field) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  return 0;
}

}  // namespace

Bandwidth measure_bandwidth(int64_t array_bytes, int passes) {
  const int64_t n = std::max<int64_t>(kGrain, array_bytes / static_cast<int64_t>(sizeof(double)));
  std::vector<double> a(static_cast<size_t>(n)), b(static_cast<size_t>(n)), c(static_cast<size_t>(n));
  // Every page touched before timing, from the threads that will read it.
  at::parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) a[i] = 0, b[i] = 1.0 + static_cast<double>(i % 7), c[i] = 0.5;
  });
  Bandwidth bw;
  bw.array_bytes = n * static_cast<int64_t>(sizeof(double));
  const auto start = std::chrono::steady_clock::now();
  double best_read = std::numeric_limits<double>::infinity(), best_triad = best_read;
  std::vector<double> sums(static_cast<size_t>(at::get_num_threads()) * 8, 0.0);
  for (int p = 0; p < passes; ++p) {
    best_read = std::min(best_read, seconds_of([&] {
      at::parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int64_t i = lo;
        for (; i + 4 <= hi; i += 4) s0 += b[i], s1 += b[i + 1], s2 += b[i + 2], s3 += b[i + 3];
        for (; i < hi; ++i) s0 += b[i];
        sums[static_cast<size_t>(at::get_thread_num()) * 8] += s0 + s1 + s2 + s3;
      });
    }));
    best_triad = std::min(best_triad, seconds_of([&] {
      at::parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) a[i] = b[i] + 3.0 * c[i];
      });
    }));
  }
  double sink = a[static_cast<size_t>(n / 2)];
  for (double s : sums) sink += s;
  g_sink = sink;
  bw.read_bytes_per_s = static_cast<double>(bw.array_bytes) / best_read;
  bw.triad_bytes_per_s = 3.0 * static_cast<double>(bw.array_bytes) / best_triad;
  bw.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return bw;
}

int64_t peak_resident_bytes() {
  if (const int64_t hwm = status_field("VmHWM")) return hwm;
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;  // kilobytes on Linux
}

int64_t resident_bytes() { return status_field("VmRSS"); }

}  // namespace dms::cli
