#include "dms/kernels/cpu/quant_matmul.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "dms/kernels/cpu/parallel.h"
#include "dms/kernels/cpu/quant_blocks.h"
#include "dms/util/error.h"

namespace dms::cpu {
namespace {

// A row kernel takes at most this many activation rows per call (its accumulators stay in registers).
constexpr int kMaxRowsPerDot = 8;
// Bytes of weights one thread takes at least per parallel_for chunk on the decode path: below
// that, waking a thread costs more than the rows it would read.
constexpr int64_t kDecodeGrainBytes = 32 * 1024;
// The batched path's fp32 tile of dequantized weight rows: large enough that each at::mm call
// has work for every thread, small enough to stay in the L2 caches between dequantizing and use.
constexpr int64_t kTileBytes = 2 * 1024 * 1024;
constexpr size_t kCacheLine = 64;

quant::Kernels make_kernels(CpuIsa isa) {
  quant::Kernels k{};
  quant::fill_scalar(k);  // the ISA's fill leaves the types it has no kernel for on the scalar ones
  if (isa == CpuIsa::Avx2) quant::fill_avx2(k);
  if (isa == CpuIsa::Avx512) quant::fill_avx512(k);
#if defined(__x86_64__)
  if (isa == CpuIsa::Avx512 && __builtin_cpu_supports("avx512vnni")) quant::fill_avx512_vnni(k);
#endif
  return k;
}

const quant::Kernels& kernels(CpuIsa isa) {
  static const quant::Kernels table[3] = {make_kernels(CpuIsa::Scalar), make_kernels(CpuIsa::Avx2),
                                          make_kernels(CpuIsa::Avx512)};
  return table[static_cast<int>(isa)];
}

quant::RowDot row_dot(const quant::Kernels& k, GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return k.q4_0;
    case GgmlType::Q4_1: return k.q4_1;
    case GgmlType::Q5_0: return k.q5_0;
    case GgmlType::Q5_1: return k.q5_1;
    case GgmlType::Q8_0: return k.q8_0;
    case GgmlType::Q2_K: return k.q2_k;
    case GgmlType::Q3_K: return k.q3_k;
    case GgmlType::Q4_K: return k.q4_k;
    case GgmlType::Q5_K: return k.q5_k;
    case GgmlType::Q6_K: return k.q6_k;
    case GgmlType::F16: return k.f16;
    case GgmlType::BF16: return k.bf16;
    default: return nullptr;
  }
}

quant::RowDotI16 row_dot_i16(const quant::Kernels& k, GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return k.q4_0_i16;
    case GgmlType::Q4_1: return k.q4_1_i16;
    case GgmlType::Q5_0: return k.q5_0_i16;
    case GgmlType::Q5_1: return k.q5_1_i16;
    case GgmlType::Q8_0: return k.q8_0_i16;
    case GgmlType::Q4_K: return k.q4_k_i16;
    case GgmlType::Q6_K: return k.q6_k_i16;
    default: return nullptr;
  }
}

quant::DequantRow dequant_row(const quant::Kernels& k, GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return k.dequant_q4_0;
    case GgmlType::Q4_1: return k.dequant_q4_1;
    case GgmlType::Q5_0: return k.dequant_q5_0;
    case GgmlType::Q5_1: return k.dequant_q5_1;
    case GgmlType::Q8_0: return k.dequant_q8_0;
    case GgmlType::Q2_K: return k.dequant_q2_k;
    case GgmlType::Q3_K: return k.dequant_q3_k;
    case GgmlType::Q4_K: return k.dequant_q4_k;
    case GgmlType::Q5_K: return k.dequant_q5_k;
    case GgmlType::Q6_K: return k.dequant_q6_k;
    case GgmlType::F16: return k.dequant_f16;
    case GgmlType::BF16: return k.dequant_bf16;
    default: return nullptr;
  }
}

quant::PackedDotI16 packed_dot(const quant::Kernels& k, GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return k.packed_q4_0_i16;
    case GgmlType::Q4_1: return k.packed_q4_1_i16;
    case GgmlType::Q8_0: return k.packed_q8_0_i16;
    default: return nullptr;
  }
}

quant::PackedDot packed_dot_f32(const quant::Kernels& k, GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return k.packed_q4_0;
    case GgmlType::Q4_1: return k.packed_q4_1;
    case GgmlType::Q8_0: return k.packed_q8_0;
    default: return nullptr;
  }
}

quant::PackedDequant packed_dequant(const quant::Kernels& k, GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return k.packed_dequant_q4_0;
    case GgmlType::Q4_1: return k.packed_dequant_q4_1;
    case GgmlType::Q8_0: return k.packed_dequant_q8_0;
    default: return nullptr;
  }
}

// Row r's block of a packed group's block (quant_matmul.h, "The packed layout") and the ggml
// block it came from: kPack writes the group's bytes from the row's, otherwise the other way.
template <bool kPack>
void move_block(GgmlType t, std::conditional_t<kPack, uint8_t*, const uint8_t*> packed, int64_t r,
                std::conditional_t<kPack, const uint8_t*, uint8_t*> plain) {
  auto move = [&](int64_t packed_at, int64_t plain_at, size_t bytes) {
    if constexpr (kPack) std::memcpy(packed + packed_at, plain + plain_at, bytes);
    else std::memcpy(plain + plain_at, packed + packed_at, bytes);
  };
  move(2 * r, 0, 2);  // d
  if (t == GgmlType::Q8_0) {
    for (int p = 0; p < 16; ++p) move(32 + 32 * p + 2 * r, 2 + 2 * p, 2);
    return;
  }
  if (t == GgmlType::Q4_1) move(32 + 2 * r, 2, 2);  // m
  // ggml: element e < 16 is the low nibble of qs[e], element e >= 16 the high nibble of qs[e - 16].
  const int qs = t == GgmlType::Q4_1 ? 4 : 2, chunks = t == GgmlType::Q4_1 ? 64 : 32;
  if constexpr (!kPack) std::memset(plain + qs, 0, 16);
  for (int c = 0; c < 4; ++c) {
    uint32_t bits = 0;
    if constexpr (!kPack) std::memcpy(&bits, packed + chunks + 64 * c + 4 * r, 4);
    for (int i = 0; i < 8; ++i) {
      const int e = 8 * c + i, at = 4 * (i / 2) + 16 * (i % 2), nibble = e < 16 ? 0 : 4;
      if constexpr (kPack) bits |= static_cast<uint32_t>((plain[qs + e % 16] >> nibble) & 0x0F) << at;
      else plain[qs + e % 16] = static_cast<uint8_t>(plain[qs + e % 16] | ((bits >> at) & 0x0F) << nibble);
    }
    if constexpr (kPack) std::memcpy(packed + chunks + 64 * c + 4 * r, &bits, 4);
  }
}

// n activation rows of `cols` quantized by k.quantize_acts into this thread's buffers (the worker
// threads then read them), with their byte planes where packed kernels will read them: valid until
// the thread's next call.
quant::ActRows quantize_once(const quant::Kernels& k, const float* x, int64_t n, int64_t cols, bool packed) {
  thread_local std::vector<int16_t> levels;
  thread_local std::vector<float> scales, sums;
  thread_local std::vector<uint8_t> bytes;
  levels.resize(static_cast<size_t>(n * cols));
  scales.resize(static_cast<size_t>(n * cols / 32));
  sums.resize(scales.size());
  k.quantize_acts(x, n, cols, levels.data(), scales.data(), sums.data());
  if (!packed || !k.split_levels) return {levels.data(), scales.data(), sums.data(), cols};
  bytes.resize(static_cast<size_t>(2 * n * cols));
  k.split_levels(levels.data(), n * cols, bytes.data());
  return {levels.data(), scales.data(), sums.data(), cols, bytes.data()};
}

// Activation rows t0.. of `all`.
quant::ActRows rows_from(const quant::ActRows& all, int64_t t0) {
  const int64_t cols = all.cols;
  return {all.q + t0 * cols, all.scale + t0 * cols / 32, all.sum + t0 * cols / 32, cols,
          all.bytes ? all.bytes + 2 * t0 * cols : nullptr};
}

// A packed matrix, its kernel and its output on the packed 16-bit decode path.
struct PackedTarget {
  const QuantMatrix* w;
  quant::PackedDotI16 dot;
  float* y;
};

// The groups of all the targets (one input, quantized in acts) split across the threads in one
// parallel region: each group's rows come out as a call for its matrix alone would give them.
void packed_decode(std::span<const PackedTarget> targets, const quant::ActRows& acts, int64_t n) {
  int64_t groups = 0, min_row_bytes = INT64_MAX;
  for (const PackedTarget& t : targets) {
    groups += t.w->rows / kPackRows;
    min_row_bytes = std::min(min_row_bytes, static_cast<int64_t>(ggml_row_bytes(t.w->type, t.w->cols)));
  }
  const int64_t grain = std::max<int64_t>(1, kDecodeGrainBytes / (kPackRows * std::max<int64_t>(min_row_bytes, 1)));
  const int64_t cols = acts.cols;
  parallel_chunks(groups, grain, [&](int64_t begin, int64_t end) {
    int64_t base = 0;  // the target's first group among all the targets' groups
    for (const PackedTarget& t : targets) {
      const int64_t count = t.w->rows / kPackRows, lo = std::max(begin, base) - base;
      const int64_t hi = std::min(end, base + count) - base;
      base += count;
      const int64_t row_bytes = static_cast<int64_t>(ggml_row_bytes(t.w->type, t.w->cols)), blocks = cols / 32;
      for (int64_t t0 = 0; t0 < n && lo < hi; t0 += kMaxRowsPerDot) {
        const quant::ActRows rows = rows_from(acts, t0);
        const int m = static_cast<int>(std::min<int64_t>(kMaxRowsPerDot, n - t0));
        for (int64_t g = lo; g < hi; ++g)
          t.dot(t.w->data + g * kPackRows * row_bytes, blocks, rows, m, t.y + t0 * t.w->rows + g * kPackRows, t.w->rows);
      }
    }
  });
}

void decode_matmul(const QuantMatrix& w, const float* x, int64_t n, float* y, CpuIsa isa, Activations activations) {
  const quant::Kernels& k = kernels(isa);
  const int64_t blocks = w.cols / ggml_block_elems(w.type);
  const int64_t row_bytes = static_cast<int64_t>(ggml_row_bytes(w.type, w.cols));
  const int64_t grain = std::max<int64_t>(1, kDecodeGrainBytes / std::max<int64_t>(row_bytes, 1));
  const quant::RowDotI16 idot = activations == Activations::Int16 ? row_dot_i16(k, w.type) : nullptr;
  const quant::PackedDotI16 pdot = w.packed && idot ? packed_dot(k, w.type) : nullptr;
  if (idot && (pdot || !w.packed)) {
    const quant::ActRows all = quantize_once(k, x, n, w.cols, pdot != nullptr);
    const PackedTarget target{&w, pdot, y};
    if (pdot) return packed_decode({&target, 1}, all, n);
    parallel_chunks(w.rows, grain, [&](int64_t begin, int64_t end) {
      for (int64_t t0 = 0; t0 < n; t0 += kMaxRowsPerDot) {
        const quant::ActRows acts = rows_from(all, t0);
        const int count = static_cast<int>(std::min<int64_t>(kMaxRowsPerDot, n - t0));
        for (int64_t r = begin; r < end; ++r) idot(w.data + r * row_bytes, blocks, acts, count, y + t0 * w.rows + r, w.rows);
      }
    });
    return;
  }
  const quant::PackedDot fdot = w.packed ? packed_dot_f32(k, w.type) : nullptr;
  if (fdot) {
    thread_local std::vector<float> sums;  // each activation row's block sums, for the constant terms
    sums.resize(static_cast<size_t>(n * blocks));
    for (int64_t i = 0; i < n * blocks; ++i) {
      float s = 0;
      for (int64_t j = 0; j < 32; ++j) s += x[i * 32 + j];
      sums[i] = s;
    }
    const float* sum = sums.data();
    parallel_chunks(w.rows / kPackRows, std::max<int64_t>(1, grain / kPackRows), [&](int64_t begin, int64_t end) {
      for (int64_t t0 = 0; t0 < n; t0 += kMaxRowsPerDot) {
        const int count = static_cast<int>(std::min<int64_t>(kMaxRowsPerDot, n - t0));
        for (int64_t g = begin; g < end; ++g)
          fdot(w.data + g * kPackRows * row_bytes, blocks, x + t0 * w.cols, sum + t0 * blocks, w.cols, count,
               y + t0 * w.rows + g * kPackRows, w.rows);
      }
    });
    return;
  }
  // fp32 activations: the row kernels, on rows unpacked one at a time where the matrix is packed
  // (the scalar ISA's).
  const quant::RowDot dot = row_dot(k, w.type);
  parallel_for(0, w.rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> unpacked(w.packed ? static_cast<size_t>(row_bytes) : 0);
    for (int64_t r = begin; r < end; ++r) {
      const uint8_t* row = w.data + r * row_bytes;
      if (w.packed) quant_row_bytes(w, r, unpacked.data()), row = unpacked.data();
      for (int64_t t0 = 0; t0 < n; t0 += kMaxRowsPerDot) {
        const int count = static_cast<int>(std::min<int64_t>(kMaxRowsPerDot, n - t0));
        dot(row, blocks, x + t0 * w.cols, w.cols, count, y + t0 * w.rows + r, w.rows);
      }
    }
  });
}

// Tiles of rows one after another: the tile is dequantized by all threads (with the ISA's
// dequantizer, the same bits as dms::dequantize_row), then multiplied by at::mm on all threads.
// (at::mm called from inside at::parallel_for, one tile per thread, oversubscribes the cores: BLAS
// starts its own threads there and runs 20x slower.)
//
// A packed matrix's tile is column-major ([cols, tile rows]: a vector of the packed dequantizer
// stores one element of 16 rows), and its tiles are whole groups of rows.
void batched_matmul(const QuantMatrix& w, const float* x, int64_t n, float* y, CpuIsa isa) {
  const quant::DequantRow dequant = dequant_row(kernels(isa), w.type);
  const quant::PackedDequant pdequant = w.packed ? packed_dequant(kernels(isa), w.type) : nullptr;
  const int64_t blocks = w.cols / ggml_block_elems(w.type);
  const int64_t row_bytes = static_cast<int64_t>(ggml_row_bytes(w.type, w.cols));
  int64_t tile_rows = std::max<int64_t>(64, kTileBytes / (w.cols * static_cast<int64_t>(sizeof(float))));
  if (w.packed) tile_rows -= tile_rows % kPackRows;
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(std::min(tile_rows, w.rows) * w.cols) + kCacheLine / sizeof(float));
  // The worker threads write this thread's scratch, from a cache line's start: the dequantizers'
  // 64-byte (AVX-512) stores then split no line (rows of whole 32-element blocks are 128 bytes
  // apart), which took a fifth to a third off their time in bench/quant_matmul_bench --dequant.
  float* tile = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(scratch.data()) + kCacheLine - 1) &
                                         ~uintptr_t{kCacheLine - 1});
  const at::Tensor xt = at::from_blob(const_cast<float*>(x), {n, w.cols}, at::kFloat);
  for (int64_t r0 = 0; r0 < w.rows; r0 += tile_rows) {
    const int64_t count = std::min(tile_rows, w.rows - r0);
    at::Tensor out = at::from_blob(y + r0, {n, count}, {w.rows, 1}, at::kFloat);
    if (w.packed) {
      at::parallel_for(0, count / kPackRows, 1, [&](int64_t begin, int64_t end) {
        std::vector<uint8_t> row(pdequant ? 0 : static_cast<size_t>(row_bytes));
        std::vector<float> values(pdequant ? 0 : static_cast<size_t>(w.cols));
        for (int64_t g = begin; g < end; ++g) {
          float* column = tile + g * kPackRows;
          if (pdequant) {
            pdequant(w.data + (r0 + g * kPackRows) * row_bytes, blocks, column, count);
            continue;
          }
          for (int64_t i = 0; i < kPackRows; ++i) {  // no packed dequantizer: a row at a time
            quant_row_bytes(w, r0 + g * kPackRows + i, row.data());
            if (dequant) dequant(row.data(), blocks, values.data());
            else dequantize_row(w.type, row.data(), values.data(), w.cols);
            for (int64_t e = 0; e < w.cols; ++e) column[e * count + i] = values[e];
          }
        }
      });
      at::mm_out(out, xt, at::from_blob(tile, {w.cols, count}, at::kFloat));
      continue;
    }
    at::parallel_for(0, count, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        if (dequant) dequant(w.data + (r0 + r) * row_bytes, blocks, tile + r * w.cols);
        else dequantize_row(w.type, w.data + (r0 + r) * row_bytes, tile + r * w.cols, w.cols);
      }
    });
    const at::Tensor wt = at::from_blob(tile, {count, w.cols}, at::kFloat);
    at::mm_out(out, xt, wt.t());
  }
}

}  // namespace

bool quant_matmul_supports(GgmlType type) { return row_dot(kernels(CpuIsa::Scalar), type) != nullptr; }

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Scalar: return "scalar";
    case CpuIsa::Avx2: return "avx2";
    case CpuIsa::Avx512: return "avx512";
  }
  return "?";
}

bool cpu_isa_supported(CpuIsa isa) {
#if defined(__x86_64__)
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (isa == CpuIsa::Avx2) return avx2;
  if (isa == CpuIsa::Avx512) {
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
  }
#endif
  return isa == CpuIsa::Scalar;
}

CpuIsa default_cpu_isa() {
  static const CpuIsa chosen = [] {
    CpuIsa best = CpuIsa::Scalar;
    for (CpuIsa isa : {CpuIsa::Avx2, CpuIsa::Avx512})
      if (cpu_isa_supported(isa)) best = isa;
    const char* env = std::getenv("DMS_CPU_ISA");
    if (!env || !*env) return best;
    for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512})
      if (std::string(env) == cpu_isa_name(isa)) return std::min(isa, best);
    fail("DMS_CPU_ISA", std::string("'") + env + "' is not one of scalar, avx2, avx512");
  }();
  return chosen;
}

namespace {
std::atomic<Activations>& activations_setting() {
  static std::atomic<Activations> setting = [] {
    const char* env = std::getenv("DMS_ACTIVATIONS");
    if (!env || !*env || std::string(env) == "i16") return Activations::Int16;
    if (std::string(env) == "f32") return Activations::Float;
    fail("DMS_ACTIVATIONS", std::string("'") + env + "' is not one of i16, f32");
  }();
  return setting;
}
}  // namespace

Activations default_activations() { return activations_setting().load(std::memory_order_relaxed); }
void set_default_activations(Activations activations) { activations_setting().store(activations); }

namespace {
void check_args(const QuantMatrix& w, int64_t n, const QuantMatmulOptions& options) {
  if (!quant_matmul_supports(w.type)) fail("quant_matmul", "no kernel for ggml type " + ggml_type_name(w.type));
  if (w.rows < 0 || w.cols < 0 || n < 0 || w.cols % ggml_block_elems(w.type) != 0) {
    fail("quant_matmul", std::to_string(w.rows) + "x" + std::to_string(w.cols) + " " + ggml_type_name(w.type) +
                             " weights (rows of whole blocks) times " + std::to_string(n) + " rows");
  }
  if (w.packed && (!quant_pack_supports(w.type) || w.rows % kPackRows != 0)) {
    fail("quant_matmul", "packed " + std::to_string(w.rows) + "x" + std::to_string(w.cols) + " " +
                             ggml_type_name(w.type) + " weights: packing takes Q4_0, Q4_1 and Q8_0 in whole groups of 16 rows");
  }
  if (!cpu_isa_supported(options.isa)) fail("quant_matmul", std::string("this CPU lacks ") + cpu_isa_name(options.isa));
}
}  // namespace

void quant_matmul(const QuantMatrix& w, const float* x, int64_t n, float* y, QuantMatmulOptions options) {
  check_args(w, n, options);
  if (n == 0 || w.rows == 0) return;
  if (w.cols == 0) return void(std::fill(y, y + n * w.rows, 0.0f));
  const bool batched = options.path == QuantPath::Batched || (options.path == QuantPath::Auto && n >= kBatchedMinRows);
  if (batched) batched_matmul(w, x, n, y, options.isa);
  else decode_matmul(w, x, n, y, options.isa, options.activations);
}

void quant_matmul_many(const std::vector<QuantMatrix>& ws, const float* x, int64_t n, const std::vector<float*>& ys,
                       QuantMatmulOptions options) {
  if (ws.size() != ys.size()) fail("quant_matmul_many", "one output per matrix");
  for (const QuantMatrix& w : ws)
    if (w.cols != ws[0].cols)
      fail("quant_matmul_many", "matrices of " + std::to_string(ws[0].cols) + " and " + std::to_string(w.cols) +
                                    " columns cannot share one input");
  if (!cpu_isa_supported(options.isa)) fail("quant_matmul", std::string("this CPU lacks ") + cpu_isa_name(options.isa));
  const quant::Kernels& k = kernels(options.isa);
  std::vector<PackedTarget> targets;
  targets.reserve(ws.size());
  const bool decode = options.path == QuantPath::Decode || (options.path == QuantPath::Auto && n < kBatchedMinRows);
  for (size_t i = 0; i < ws.size() && decode && options.activations == Activations::Int16; ++i) {
    const quant::PackedDotI16 dot = ws[i].packed ? packed_dot(k, ws[i].type) : nullptr;
    if (!dot || !row_dot_i16(k, ws[i].type)) break;
    targets.push_back({&ws[i], dot, ys[i]});
  }
  if (targets.size() < 2 || targets.size() != ws.size() || n == 0 || ws[0].cols == 0) {
    for (size_t i = 0; i < ws.size(); ++i) quant_matmul(ws[i], x, n, ys[i], options);
    return;
  }
  for (const QuantMatrix& w : ws) check_args(w, n, options);
  packed_decode(targets, quantize_once(k, x, n, ws[0].cols, true), n);
}

void quant_row(const QuantMatrix& w, int64_t r, float* dst) {
  if (r < 0 || r >= w.rows) fail("quant_row", "row " + std::to_string(r) + " of " + std::to_string(w.rows));
  const auto row_bytes = static_cast<int64_t>(ggml_row_bytes(w.type, w.cols));
  if (!w.packed) return dequantize_row(w.type, w.data + r * row_bytes, dst, w.cols);
  thread_local std::vector<uint8_t> row;
  row.resize(static_cast<size_t>(row_bytes));
  quant_row_bytes(w, r, row.data());
  dequantize_row(w.type, row.data(), dst, w.cols);
}

bool quant_pack_supports(GgmlType type) {
  return type == GgmlType::Q4_0 || type == GgmlType::Q4_1 || type == GgmlType::Q8_0;
}

bool quant_pack_pays(GgmlType type, CpuIsa isa) {
  if (type == GgmlType::Q8_0) return isa == CpuIsa::Avx512;
  return quant_pack_supports(type) && isa != CpuIsa::Scalar;
}

bool quant_packable(const QuantMatrix& w) {
  return !w.packed && quant_pack_supports(w.type) && w.rows % kPackRows == 0 && w.cols % 32 == 0;
}

void quant_pack(const QuantMatrix& w, uint8_t* out) {
  if (!quant_packable(w)) {
    fail("quant_pack", std::to_string(w.rows) + "x" + std::to_string(w.cols) + " " + ggml_type_name(w.type) +
                           " weights: only Q4_0, Q4_1 and Q8_0 in whole groups of 16 rows are packed");
  }
  const int64_t row_bytes = static_cast<int64_t>(ggml_row_bytes(w.type, w.cols));
  const int64_t block_bytes = static_cast<int64_t>(ggml_block_bytes(w.type)), blocks = w.cols / 32;
  at::parallel_for(0, w.rows / kPackRows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g)
      for (int64_t b = 0; b < blocks; ++b)
        for (int64_t r = 0; r < kPackRows; ++r)
          move_block<true>(w.type, out + (g * row_bytes + b * block_bytes) * kPackRows, r,
                           w.data + (g * kPackRows + r) * row_bytes + b * block_bytes);
  });
}

void quant_row_bytes(const QuantMatrix& w, int64_t r, uint8_t* out) {
  if (r < 0 || r >= w.rows) fail("quant_row_bytes", "row " + std::to_string(r) + " of " + std::to_string(w.rows));
  const int64_t row_bytes = static_cast<int64_t>(ggml_row_bytes(w.type, w.cols));
  if (!w.packed) return void(std::memcpy(out, w.data + r * row_bytes, static_cast<size_t>(row_bytes)));
  const int64_t block_bytes = static_cast<int64_t>(ggml_block_bytes(w.type));
  const int64_t g = r / kPackRows;
  for (int64_t b = 0; b < w.cols / 32; ++b)
    move_block<false>(w.type, w.data + (g * row_bytes + b * block_bytes) * kPackRows, r % kPackRows, out + b * block_bytes);
}

}  // namespace dms::cpu
