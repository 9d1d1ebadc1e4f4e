// The paged decode-attention kernel alone: GB/s of K and V read per call against the machine's
// read bandwidth (the probe `dms bench` uses for its roofline), per KV dtype, at one context and
// batch. Not a test: numbers depend on the machine and its load (bench/RESULTS.md).
//
//   build/paged_attention_bench [--context N] [--batch B] [--dtypes bf16,q8,...] [--shape smollm|llama8b]
//                               [--block-size N] [--calls N] [--threads T] [--random 1]
//
// Each (sequence, KV head) holds `context` keys, every one visible; one query per sequence, as in
// decode. Its blocks lie in runs of 32 (as a prefill in chunks of 512 tokens leaves them in a
// fresh pool) in random order, or with --random each block anywhere (as after much churn). The
// pool is larger than the caches, so every call reads its keys from memory.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "dms/kernels/cpu/kv_quant.h"
#include "dms/kernels/cpu/paged_attention.h"
#include "dms/kernels/cpu/quant_matmul.h"
#include "machine_probe.h"

namespace {

struct Options {
  int64_t context = 8192, batch = 16, block_size = 16, calls = 20, threads = 2, random = 0;
  int64_t n_kv = 3, group = 3, dim = 64;
  std::vector<std::string> dtypes{"bf16", "q8"};
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "paged_attention_bench: %s\n", why.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) usage("missing value after " + a);
    const std::string v = argv[++i];
    auto number = [&] {
      try {
        return std::stoll(v);
      } catch (...) {
        usage(a + ": not a number: " + v);
      }
    };
    if (a == "--context") o.context = number();
    else if (a == "--batch") o.batch = number();
    else if (a == "--block-size") o.block_size = number();
    else if (a == "--calls") o.calls = number();
    else if (a == "--threads") o.threads = number();
    else if (a == "--random") o.random = number();
    else if (a == "--shape" && v == "smollm") o.n_kv = 3, o.group = 3, o.dim = 64;
    else if (a == "--shape" && v == "llama8b") o.n_kv = 8, o.group = 4, o.dim = 128;
    else if (a == "--dtypes") {
      o.dtypes.clear();
      for (size_t p = 0; p <= v.size();) {
        const size_t q = std::min(v.find(',', p), v.size());
        o.dtypes.push_back(v.substr(p, q - p));
        p = q + 1;
      }
    } else usage("unknown option " + a + " " + v);
  }
  if (o.context < 1 || o.batch < 1 || o.block_size < 1 || o.calls < 1 || o.threads < 1) usage("values must be >= 1");
  return o;
}

at::ScalarType dtype_of(const std::string& name) {
  if (name == "f32") return at::kFloat;
  if (name == "bf16") return at::kBFloat16;
  if (name == "f16") return at::kHalf;
  if (name == "q8") return dms::cpu::kQ8;
  usage("unknown dtype " + name);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  at::set_num_threads(static_cast<int>(o.threads));
  const auto bw = dms::cli::measure_bandwidth();
  std::printf("read bandwidth %.2f GB/s; context %lld, batch %lld, %lld KV heads x %lld queries, head dim %lld, "
              "blocks of %lld, %lld threads, ISA %s\n",
              bw.read_bytes_per_s / 1e9, static_cast<long long>(o.context), static_cast<long long>(o.batch),
              static_cast<long long>(o.n_kv), static_cast<long long>(o.group), static_cast<long long>(o.dim),
              static_cast<long long>(o.block_size), static_cast<long long>(o.threads),
              dms::cpu::cpu_isa_name(dms::cpu::default_cpu_isa()));
  std::printf("%6s %12s %20s %10s %10s\n", "dtype", "call ms", "[min, max]", "KV GB/s", "of read");
  const int64_t items = o.batch * o.n_kv, blocks_per_item = (o.context + o.block_size - 1) / o.block_size;
  std::mt19937 rng(1);
  std::vector<int32_t> pos(o.context), evict(o.context, dms::cpu::kNever);
  std::iota(pos.begin(), pos.end(), 0);
  for (const std::string& name : o.dtypes) {
    const at::ScalarType dtype = dtype_of(name);
    const int64_t num_blocks = items * blocks_per_item;
    const at::Tensor pool_k = dms::cpu::to_kv_rows(at::randn({num_blocks, o.block_size, o.dim}), dtype);
    const at::Tensor pool_v = dms::cpu::to_kv_rows(at::randn({num_blocks, o.block_size, o.dim}), dtype);
    const at::Tensor step_k = dms::cpu::to_kv_rows(at::randn({o.batch, o.n_kv, o.dim}), dtype);
    const at::Tensor step_v = dms::cpu::to_kv_rows(at::randn({o.batch, o.n_kv, o.dim}), dtype);
    const at::Tensor q = at::randn({o.batch, o.n_kv * o.group, o.dim});
    std::vector<int32_t> order(num_blocks);
    std::iota(order.begin(), order.end(), 0);
    const int64_t run = o.random ? 1 : 32;
    std::vector<int64_t> runs((num_blocks + run - 1) / run);
    std::iota(runs.begin(), runs.end(), 0);
    std::shuffle(runs.begin(), runs.end(), rng);
    for (int64_t r = 0, b = 0; r < static_cast<int64_t>(runs.size()); ++r)
      for (int64_t k = runs[r] * run; k < std::min(num_blocks, (runs[r] + 1) * run); ++k) order[b++] = static_cast<int32_t>(k);
    std::vector<dms::cpu::AttentionItem> work;
    for (int64_t i = 0; i < items; ++i)
      work.push_back({.kv_head = i % o.n_kv,
                      .row0 = i / o.n_kv,
                      .n_queries = 1,
                      .first_pos = o.context,
                      .blocks = order.data() + i * blocks_per_item,
                      .n_cached = o.context,
                      .pos = pos.data(),
                      .evict_at = evict.data()});
    std::vector<double> ms;
    for (int64_t c = 0; c <= o.calls; ++c) {
      const auto t0 = std::chrono::steady_clock::now();
      const at::Tensor out = dms::cpu::paged_attention(q, pool_k, pool_v, step_k, step_v, work);
      const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (c > 0) ms.push_back(t);  // the first call warms up
    }
    std::sort(ms.begin(), ms.end());
    const double median = ms[ms.size() / 2];
    const double bytes = 2.0 * static_cast<double>(items * o.context * dms::cpu::kv_row_bytes(dtype, o.dim));
    const double gbs = bytes / (median * 1e-3) / 1e9;
    std::printf("%6s %12.2f %9.2f, %8.2f %10.2f %9.0f%%\n", name.c_str(), median, ms.front(), ms.back(), gbs,
                100 * gbs * 1e9 / bw.read_bytes_per_s);
  }
}
