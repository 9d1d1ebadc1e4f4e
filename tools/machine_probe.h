// What the machine itself allows, measured by `dms bench` next to its results: memory
// bandwidth (the limit of a decode step, which reads every weight and every live key once) and
// the process's peak resident memory.
#pragma once
#include <cstdint>

namespace dms::cli {

struct Bandwidth {
  double read_bytes_per_s = 0;   // sum over an array much larger than the caches
  double triad_bytes_per_s = 0;  // a[i] = b[i] + s * c[i], counting 3 arrays (as STREAM does)
  int64_t array_bytes = 0;       // size of each array
  double seconds = 0;            // spent measuring
};

// Best of `passes` passes of each kernel on every thread at::get_num_threads allows.
Bandwidth measure_bandwidth(int64_t array_bytes = int64_t{256} << 20, int passes = 5);

// High-water mark of the process's resident memory so far (VmHWM of /proc/self/status, else
// getrusage's ru_maxrss), and its resident memory now (VmRSS; 0 when unknown).
int64_t peak_resident_bytes();
int64_t resident_bytes();

}  // namespace dms::cli
