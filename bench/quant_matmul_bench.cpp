// GB/s of weights read per quant_matmul call on the default model's shapes (SmolLM2-135M: Q4_1
// layers, Q8_0 tied embedding/output), per ISA level, at n = 1 and n = 64 (or the activation row
// counts --n lists), beside at::mm on the fp32 weights the engine uses today; and, with
// --crossover, decode against batched path times over n (1 to 64, or the --n list). Not a test: numbers depend on the
// machine and its load (bench/RESULTS.md).
//
//   build-quant/quant_matmul_bench [--crossover | --dequant] [--seconds S] [--threads T] [--pool-mib M]
//                                  [--n N,N,...]
//
// --dequant times the batched path's dequantizer alone, per ISA, on one thread: each matrix
// dequantized into a 64-row scratch reused row after row (in cache, as the path's tile).
// From kBatchedMinRows rows on (n = 64) a call takes the batched path, whose ISAs differ only in
// the dequantizer: the "scalar" row there is dms::dequantize_row, the others the ISA's SIMD one.
//
// Q4_1 and Q8_0 are timed in both layouts: rows as the file stores them ("rows") and packed as
// the engine holds them (quant_pack, "packed"); --crossover uses the packed layout.
//
// Each call reads a different copy of the weights, cycling through a pool of at least 128 MiB,
// so the bytes come from memory rather than a warm cache, as in a decode step over a whole model;
// the fp32 weights of today's path likewise. `--pool-mib 0` keeps one copy (warm in cache: the
// kernels' compute speed).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dms/format/ggml_types.h"
#include "dms/kernels/cpu/quant_blocks.h"
#include "dms/kernels/cpu/quant_matmul.h"

namespace {

using dms::GgmlType;
using dms::cpu::CpuIsa;
using dms::cpu::QuantMatrix;
using dms::cpu::QuantPath;

size_t kPoolBytes = size_t{128} << 20;
std::vector<int64_t> kRowCounts = {1, 64};  // activation rows, for the bandwidth table

struct Shape {
  const char* what;
  GgmlType type;
  int64_t rows, cols;
};

const Shape kShapes[] = {
    {"attn q/o", GgmlType::Q4_1, 576, 576},   {"attn k/v", GgmlType::Q4_1, 192, 576},
    {"mlp gate/up", GgmlType::Q4_1, 1536, 576}, {"mlp down", GgmlType::Q4_1, 576, 1536},
    {"lm head", GgmlType::Q8_0, 49152, 576},
};

// Copies of one random weight matrix (random bytes, ordinary fp16 scales) filling the pool.
struct Pool {
  std::vector<uint8_t> bytes;
  size_t matrix_bytes = 0, copies = 0;
  bool packed = false;
  QuantMatrix at(size_t i, const Shape& s) const {
    return {s.type, s.rows, s.cols, bytes.data() + (i % copies) * matrix_bytes, packed};
  }
};

Pool make_pool(const Shape& s, bool packed = false) {
  Pool p;
  p.matrix_bytes = dms::ggml_row_bytes(s.type, s.cols) * s.rows;
  p.copies = std::max<size_t>(1, kPoolBytes / p.matrix_bytes);
  p.bytes.resize(p.copies * p.matrix_bytes);
  std::mt19937_64 rng(1);
  for (auto& b : p.bytes) b = static_cast<uint8_t>(rng());
  const size_t block_bytes = dms::ggml_block_bytes(s.type);
  const uint16_t scale = 0x2000;  // fp16 2^-7: finite, so timings see no NaN slow paths
  for (size_t off = 0; off < p.bytes.size(); off += block_bytes) {
    std::memcpy(&p.bytes[off], &scale, 2);
    if (s.type == GgmlType::Q4_1) std::memcpy(&p.bytes[off + 2], &scale, 2);
  }
  if (packed) {
    std::vector<uint8_t> one(p.matrix_bytes);
    for (size_t c = 0; c < p.copies; ++c) {
      dms::cpu::quant_pack(p.at(c, s), one.data());
      std::memcpy(p.bytes.data() + c * p.matrix_bytes, one.data(), one.size());
    }
    p.packed = true;
  }
  return p;
}

// Median seconds of fn(i) over calls i = 0, 1, ... for about `seconds` (at least 5 calls).
template <class Fn>
double median_seconds(double seconds, Fn fn) {
  std::vector<double> samples;
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0;; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn(i);
    const auto t1 = std::chrono::steady_clock::now();
    samples.push_back(std::chrono::duration<double>(t1 - t0).count());
    if (samples.size() >= 5 && std::chrono::duration<double>(t1 - start).count() > seconds) break;
  }
  std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
  return samples[samples.size() / 2];
}

std::vector<CpuIsa> isas() {
  std::vector<CpuIsa> out;
  for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512})
    if (dms::cpu::cpu_isa_supported(isa)) out.push_back(isa);
  return out;
}

void bandwidth(double seconds) {
  std::printf("%-12s %-5s %11s %4s  %-14s %9s %9s\n", "matrix", "type", "shape", "n", "kernel", "ms", "GB/s");
  for (const Shape& s : kShapes) {
    const Pool pool = make_pool(s);
    const bool packable = dms::cpu::quant_packable({s.type, s.rows, s.cols, pool.bytes.data()});
    const Pool packed_pool = packable ? make_pool(s, true) : Pool{};
    // Today's path: at::mm on fp32 weights, from a pool of fp32 copies of the same size (the
    // lm head's 113 MiB is a pool of one); its GB/s counts the quantized bytes it stands in for.
    const int64_t dense_elems = s.rows * s.cols;
    const size_t dense_copies = std::max<size_t>(1, kPoolBytes / (dense_elems * sizeof(float)));
    std::vector<float> dense(dense_copies * dense_elems);
    for (int64_t r = 0; r < s.rows; ++r) dms::cpu::quant_row(pool.at(0, s), r, dense.data() + r * s.cols);
    for (size_t c = 1; c < dense_copies; ++c)
      std::copy(dense.begin(), dense.begin() + dense_elems, dense.begin() + c * dense_elems);
    for (int64_t n : kRowCounts) {
      std::vector<float> x(n * s.cols), y(n * s.rows);
      std::mt19937 rng(2);
      std::normal_distribution<float> normal(0, 1);
      for (auto& v : x) v = normal(rng);
      auto row = [&](const std::string& kernel, double sec) {
        std::printf("%-12s %-5s %5lldx%-5lld %4lld  %-14s %9.4f %9.2f\n", s.what, dms::ggml_type_name(s.type).c_str(),
                    static_cast<long long>(s.rows), static_cast<long long>(s.cols), static_cast<long long>(n),
                    kernel.c_str(), sec * 1e3, pool.matrix_bytes / sec / 1e9);
        std::fflush(stdout);
      };
      for (CpuIsa isa : isas()) {
        row(std::string(dms::cpu::cpu_isa_name(isa)) + " rows", median_seconds(seconds, [&](size_t i) {
              dms::cpu::quant_matmul(pool.at(i, s), x.data(), n, y.data(), {isa, QuantPath::Auto});
            }));
        if (!packed_pool.packed || isa == CpuIsa::Scalar) continue;
        row(std::string(dms::cpu::cpu_isa_name(isa)) + " packed", median_seconds(seconds, [&](size_t i) {
              dms::cpu::quant_matmul(packed_pool.at(i, s), x.data(), n, y.data(), {isa, QuantPath::Auto});
            }));
      }
      const at::Tensor xt = at::from_blob(x.data(), {n, s.cols}, at::kFloat);
      row("fp32 at::mm", median_seconds(seconds, [&](size_t i) {
            const at::Tensor w32 = at::from_blob(dense.data() + (i % dense_copies) * dense_elems, {s.rows, s.cols});
            at::mm(xt, w32.t());
          }));
    }
  }
}

void crossover(double seconds, const std::vector<int64_t>& crossover_rows) {
  const CpuIsa best = isas().back();
  std::printf("%-12s %4s %12s %12s   (%s, ms per call)\n", "matrix", "n", "decode", "batched", dms::cpu::cpu_isa_name(best));
  for (const Shape& s : kShapes) {
    const Pool pool = make_pool(s, dms::cpu::quant_pack_supports(s.type));
    for (int64_t n : crossover_rows) {
      std::vector<float> x(n * s.cols, 0.5f), y(n * s.rows);
      double sec[2];
      for (QuantPath path : {QuantPath::Decode, QuantPath::Batched}) {
        sec[path == QuantPath::Batched] = median_seconds(seconds, [&](size_t i) {
          dms::cpu::quant_matmul(pool.at(i, s), x.data(), n, y.data(), {best, path});
        });
      }
      std::printf("%-12s %4lld %12.4f %12.4f\n", s.what, static_cast<long long>(n), sec[0] * 1e3, sec[1] * 1e3);
      std::fflush(stdout);
    }
  }
}

dms::cpu::quant::DequantRow dequantizer(CpuIsa isa, GgmlType t) {
  dms::cpu::quant::Kernels k{};
  dms::cpu::quant::fill_scalar(k);
  if (isa == CpuIsa::Avx2) dms::cpu::quant::fill_avx2(k);
  if (isa == CpuIsa::Avx512) dms::cpu::quant::fill_avx512(k);
  return t == GgmlType::Q4_1 ? k.dequant_q4_1 : t == GgmlType::Q8_0 ? k.dequant_q8_0 : nullptr;
}

void dequant(double seconds) {
  std::printf("%-12s %-5s %11s  %-8s %9s %9s %9s\n", "matrix", "type", "shape", "kernel", "ms", "GB/s", "ns/row");
  for (const Shape& s : kShapes) {
    const Pool pool = make_pool(s);
    const int64_t chunk = 64, blocks = s.cols / dms::ggml_block_elems(s.type);
    const size_t row_bytes = dms::ggml_row_bytes(s.type, s.cols);
    std::vector<float> scratch(chunk * s.cols + 16);  // from a cache line's start, as quant_matmul's
    float* tile = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(scratch.data()) + 63) & ~uintptr_t{63});
    for (CpuIsa isa : isas()) {
      const auto deq = dequantizer(isa, s.type);
      const double sec = median_seconds(seconds, [&](size_t i) {
        const QuantMatrix m = pool.at(i, s);
        for (int64_t r = 0; r < s.rows; ++r) deq(m.data + r * row_bytes, blocks, tile + (r % chunk) * s.cols);
      });
      std::printf("%-12s %-5s %5lldx%-5lld  %-8s %9.4f %9.2f %9.1f\n", s.what, dms::ggml_type_name(s.type).c_str(),
                  static_cast<long long>(s.rows), static_cast<long long>(s.cols), dms::cpu::cpu_isa_name(isa),
                  sec * 1e3, pool.matrix_bytes / sec / 1e9, sec * 1e9 / s.rows);
      std::fflush(stdout);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool cross = false, dequant_only = false, rows_given = false;
  double seconds = 0.5;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--crossover") cross = true;
    else if (arg == "--dequant") dequant_only = true;
    else if (arg == "--seconds" && i + 1 < argc) seconds = std::stod(argv[++i]);
    else if (arg == "--threads" && i + 1 < argc) at::set_num_threads(std::stoi(argv[++i]));
    else if (arg == "--pool-mib" && i + 1 < argc) kPoolBytes = std::stoul(argv[++i]) << 20;
    else if (arg == "--n" && i + 1 < argc) {
      kRowCounts.clear();
      rows_given = true;
      const std::string list = argv[++i];
      for (size_t pos = 0; pos <= list.size();) {
        const size_t end = std::min(list.find(',', pos), list.size());
        kRowCounts.push_back(std::stoll(list.substr(pos, end - pos)));
        pos = end + 1;
      }
    } else {
      std::fprintf(stderr, "usage: %s [--crossover | --dequant] [--seconds S] [--threads T] [--pool-mib M] [--n N,N,...]\n",
                   argv[0]);
      return 2;
    }
  }
  std::printf("threads %d\n", at::get_num_threads());
  if (cross) crossover(seconds, rows_given ? kRowCounts : std::vector<int64_t>{1, 2, 4, 8, 12, 16, 24, 32, 64});
  else if (dequant_only) dequant(seconds);
  else bandwidth(seconds);
  return 0;
}
