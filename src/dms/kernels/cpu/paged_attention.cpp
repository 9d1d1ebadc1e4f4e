#include "dms/kernels/cpu/paged_attention.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>

#include "dms/format/half.h"
#include "dms/kernels/cpu/attention_rows.h"
#include "dms/kernels/cpu/kv_quant.h"
#include "dms/kernels/cpu/parallel.h"
#include "dms/kernels/cpu/quant_matmul.h"
#include "dms/kernels/cpu/vector_math.h"
#include "dms/util/error.h"
#include "dms/util/kept_tensor.h"

namespace dms::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// The step's own keys are read in tiles of this many rows (the cached ones block by block).
constexpr int64_t kStepTile = 32;
// Queries per BLAS product: bounds the score matrix at kBlasQueryTile * G * keys floats.
constexpr int64_t kBlasQueryTile = 64;
// A decode item's tiles are cut into pieces of this many, run on any thread and merged in
// order. The cut depends on the item alone, never on the batch or the thread count, so a
// sequence's attention comes out the same bits in any batch (forked samples give what runs
// of their own give); merging a piece costs about 1/500 of reading it.
constexpr int64_t kPieceTiles = 16;
constexpr int64_t kMergeGrain = 8;  // items per thread when merging the pieces

struct Shape {
  int64_t n_heads, n_kv, group, dim, block_size;
  float scale;
  int64_t row_bytes;  // of one stored K or V row (kv_quant.h)
};

// Online-softmax state of one piece of an item: rows r = t * group + h.
struct Partial {
  std::vector<float> max, sum, acc;  // [R], [R], [R * dim]
  void reset(int64_t rows, int64_t dim) {
    max.assign(rows, kNegInf);
    sum.assign(rows, 0.0f);
    acc.assign(rows * dim, 0.0f);
  }
};

// A run of keys, as stored and (when asked for) as fp32 rows, with what decides who sees them.
struct TileView {
  const uint8_t* k_rows;  // as stored, row_stride bytes apart
  const uint8_t* v_rows;
  int64_t row_stride;
  const float* k;         // as fp32 (Kernel::tile with as_float)
  const float* v;
  int64_t stride;      // floats between rows of k and v
  int64_t n;
  const int32_t* pos;
  const int32_t* evict_at;
  int64_t first_query;  // queries before this one see none of the tile (its keys come later)
  bool all_visible;     // every query from first_query on sees every key
  int64_t mass_index;   // index of key 0 in the item's mass arrays
};

// Per-thread buffers for converting a tile to fp32 and for its scores.
struct Scratch {
  std::vector<float> k, v, scores;
  std::vector<int32_t> pos, evict_at;
  std::vector<uint8_t> visible;
  void reserve(int64_t rows, int64_t dim, int64_t group) {
    k.resize(rows * dim);
    v.resize(rows * dim);
    scores.resize(rows * group);
    pos.resize(rows);
    evict_at.resize(rows);
    visible.resize(rows);
  }
};

// Stored rows of each KV format; Q8 is a marker (kv_quant.h: levels, then fp16 scales).
struct Q8 {};

template <typename E>
constexpr attn::RowFormat row_format() {
  if constexpr (std::is_same_v<E, float>) return attn::RowFormat::F32;
  if constexpr (std::is_same_v<E, c10::BFloat16>) return attn::RowFormat::BF16;
  if constexpr (std::is_same_v<E, c10::Half>) return attn::RowFormat::F16;
  if constexpr (std::is_same_v<E, Q8>) return attn::RowFormat::Q8;
}

// One stored row of `dim` values to fp32.
template <typename E>
void row_to_float(const uint8_t* src, int64_t dim, float* dst) {
  if constexpr (std::is_same_v<E, float>) {
    std::memcpy(dst, src, dim * sizeof(float));
  } else if constexpr (std::is_same_v<E, c10::BFloat16>) {
    for (int64_t i = 0; i < dim; ++i) {
      uint16_t b;
      std::memcpy(&b, src + 2 * i, 2);
      dst[i] = bf16_to_fp32(b);
    }
  } else if constexpr (std::is_same_v<E, c10::Half>) {
    for (int64_t i = 0; i < dim; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      dst[i] = fp16_to_fp32(h);
    }
  } else {
    dequantize_q8_row(src, dim, dst);
  }
}

// The ISA's inner loops when the CPU has one and the head dim (and q8 group) fit its vectors;
// nullptr: the portable loops of vector_math.h over rows converted to fp32.
const attn::Kernels* isa_kernels(CpuIsa isa, int64_t dim, int64_t group) {
  static const attn::Kernels avx2 = [] {
    attn::Kernels k;
    attn::fill_avx2(k);
    return k;
  }();
  static const attn::Kernels avx512 = [] {
    attn::Kernels k;
    attn::fill_avx512(k);
    return k;
  }();
  const attn::Kernels* table = isa == CpuIsa::Avx512 ? &avx512 : isa == CpuIsa::Avx2 ? &avx2 : nullptr;
  if (!table || !table->scores || dim % table->run != 0 || (group != dim && group != table->run)) return nullptr;
  return table;
}

template <typename E>
class Kernel {
 public:
  Kernel(const Shape& s, const at::Tensor& q, const at::Tensor& pool_k, const at::Tensor& pool_v,
         const at::Tensor& step_k, const at::Tensor& step_v, CpuIsa isa)
      : s_(s),
        q_(q.data_ptr<float>()),
        pool_k_(static_cast<const uint8_t*>(pool_k.data_ptr())),
        pool_v_(static_cast<const uint8_t*>(pool_v.data_ptr())),
        step_k_(static_cast<const uint8_t*>(step_k.data_ptr())),
        step_v_(static_cast<const uint8_t*>(step_v.data_ptr())),
        group_(std::is_same_v<E, Q8> ? q8_group(s.dim) : s.dim),
        isa_(isa_kernels(isa, s.dim, group_)) {}

  int64_t cached_tiles(const AttentionItem& it) const { return (it.n_cached + s_.block_size - 1) / s_.block_size; }
  int64_t tiles(const AttentionItem& it) const { return cached_tiles(it) + (it.n_queries + kStepTile - 1) / kStepTile; }
  int64_t scratch_rows() const { return std::max(s_.block_size, kStepTile); }

  // Tile `index` of `it`: its cached blocks, then its step keys kStepTile at a time. The rows
  // are converted to fp32 in `sc` when `as_float` (or when no ISA kernel reads them as stored).
  TileView tile(const AttentionItem& it, int64_t index, Scratch& sc, bool as_float = false) const {
    const int64_t D = s_.dim, RB = s_.row_bytes, n_cached_tiles = cached_tiles(it);
    const int32_t last_query_pos = static_cast<int32_t>(it.first_pos + it.n_queries - 1);
    TileView t{};
    const uint8_t *k, *v;
    int64_t stride;
    if (index < n_cached_tiles) {
      const int64_t first = index * s_.block_size;
      t.n = std::min(s_.block_size, it.n_cached - first);
      const int64_t row = static_cast<int64_t>(it.blocks[index]) * s_.block_size;
      k = pool_k_ + row * RB;
      v = pool_v_ + row * RB;
      stride = RB;
      t.pos = it.pos + first;
      t.evict_at = it.evict_at + first;
      if (it.patched_slot >= first && it.patched_slot < first + t.n) {
        std::copy(t.evict_at, t.evict_at + t.n, sc.evict_at.begin());
        sc.evict_at[it.patched_slot - first] = it.patched_evict_at;
        t.evict_at = sc.evict_at.data();
      }
      t.first_query = 0;
      t.mass_index = first;
    } else {
      const int64_t first = (index - n_cached_tiles) * kStepTile;
      t.n = std::min(kStepTile, it.n_queries - first);
      k = step_k_ + ((it.row0 + first) * s_.n_kv + it.kv_head) * RB;
      v = step_v_ + ((it.row0 + first) * s_.n_kv + it.kv_head) * RB;
      stride = s_.n_kv * RB;
      for (int64_t j = 0; j < t.n; ++j) {
        sc.pos[j] = static_cast<int32_t>(it.first_pos + first + j);
        sc.evict_at[j] = it.step_evict_at ? it.step_evict_at[first + j] : kNever;
      }
      t.pos = sc.pos.data();
      t.evict_at = sc.evict_at.data();
      t.first_query = first;
      t.mass_index = it.n_cached + first;
    }
    // Keys of one tile are in position order only for step tiles, so test every key.
    t.all_visible = true;
    for (int64_t j = 0; j < t.n && t.all_visible; ++j)
      t.all_visible = t.evict_at[j] > last_query_pos && t.pos[j] <= it.first_pos + t.first_query;
    t.k_rows = k;
    t.v_rows = v;
    t.row_stride = stride;
    if (!as_float && isa_) return t;
    if constexpr (std::is_same_v<E, float>) {
      t.k = reinterpret_cast<const float*>(k);
      t.v = reinterpret_cast<const float*>(v);
      t.stride = stride / static_cast<int64_t>(sizeof(float));
    } else {
      for (int64_t j = 0; j < t.n; ++j) {
        row_to_float<E>(k + j * stride, D, sc.k.data() + j * D);
        row_to_float<E>(v + j * stride, D, sc.v.data() + j * D);
      }
      t.k = sc.k.data();
      t.v = sc.v.data();
      t.stride = D;
    }
    return t;
  }

  // Asks for cached tile `index`'s keys and values ahead of use: blocks lie anywhere in the
  // pool, so the hardware prefetcher cannot guess the next one.
  void prefetch(const AttentionItem& it, int64_t index) const {
    if (index >= cached_tiles(it)) return;
    const int64_t first = index * s_.block_size, n = std::min(s_.block_size, it.n_cached - first);
    const int64_t offset = static_cast<int64_t>(it.blocks[index]) * s_.block_size * s_.row_bytes;
    const uint8_t* k = pool_k_ + offset;
    const uint8_t* v = pool_v_ + offset;
    for (int64_t byte = 0; byte < n * s_.row_bytes; byte += 64) {
      __builtin_prefetch(k + byte);
      __builtin_prefetch(v + byte);
    }
  }

  // Which keys of `t` the query at query_pos sees (sc.visible); false when none.
  static bool visibility(const TileView& t, int64_t query_pos, Scratch& sc) {
    bool any = false;
    for (int64_t j = 0; j < t.n; ++j) {
      sc.visible[j] = t.pos[j] <= query_pos && query_pos < t.evict_at[j];
      any |= sc.visible[j] != 0;
    }
    return any;
  }

  const float* query(const AttentionItem& it, int64_t t, int64_t h) const {
    return q_ + ((it.row0 + t) * s_.n_heads + it.kv_head * s_.group + h) * s_.dim;
  }

  attn::Rows rows(const uint8_t* data, const TileView& t) const {
    return {row_format<E>(), data, t.row_stride, t.n, s_.dim, group_};
  }

  // Scores of query q's G heads against the tile's keys, scaled, -inf where hidden:
  // sc.scores[h * t.n + j].
  void scores(const AttentionItem& it, const TileView& t, int64_t q, bool all_visible, Scratch& sc) const {
    const int64_t D = s_.dim, G = s_.group, n = t.n;
    const float* qv = query(it, q, 0);
    if (isa_) {
      isa_->scores(qv, G, rows(t.k_rows, t), sc.scores.data());
    } else {
      for (int64_t h = 0; h < G; ++h) dot_rows(qv + h * D, t.k, t.stride, n, D, sc.scores.data() + h * n);
    }
    for (int64_t h = 0; h < G; ++h) {
      float* out = sc.scores.data() + h * n;
      for (int64_t j = 0; j < n; ++j) out[j] = all_visible || sc.visible[j] ? out[j] * s_.scale : kNegInf;
    }
  }

  // Folds tiles [begin, end) of `it` into `p`.
  void accumulate(const AttentionItem& it, int64_t begin, int64_t end, Partial& p, Scratch& sc) const {
    const int64_t D = s_.dim, G = s_.group;
    for (int64_t index = begin; index < end; ++index) {
      if (index + 1 < end) prefetch(it, index + 1);
      const TileView t = tile(it, index, sc);
      for (int64_t q = t.first_query; q < it.n_queries; ++q) {
        if (!t.all_visible && !visibility(t, it.first_pos + q, sc)) continue;
        float* acc_q = p.acc.data() + q * G * D;
        if (isa_) {  // the whole update in the ISA's vectors
          isa_->fold(query(it, q, 0), G, s_.scale, rows(t.k_rows, t), rows(t.v_rows, t),
                     t.all_visible ? nullptr : sc.visible.data(), p.max.data() + q * G, p.sum.data() + q * G, acc_q,
                     sc.scores.data());
          continue;
        }
        scores(it, t, q, t.all_visible, sc);
        for (int64_t h = 0; h < G; ++h) {
          const int64_t r = q * G + h;
          float* w = sc.scores.data() + h * t.n;
          float tile_max = kNegInf;
          for (int64_t j = 0; j < t.n; ++j) tile_max = std::max(tile_max, w[j]);
          const float new_max = std::max(p.max[r], tile_max);
          if (new_max > p.max[r]) {
            const float rescale = std::exp(p.max[r] - new_max);
            p.sum[r] *= rescale;
            scale_in_place(acc_q + h * D, rescale, D);
            p.max[r] = new_max;
          }
          exp_shifted(w, new_max, t.n);
          float sum = 0;
          for (int64_t j = 0; j < t.n; ++j) sum += w[j];
          p.sum[r] += sum;
        }
        for (int64_t h = 0; h < G; ++h)
          add_weighted_rows(acc_q + h * D, sc.scores.data() + h * t.n, t.v, t.stride, t.n, D);
      }
    }
  }

  // Adds the final weights (row maxima `max`, normalisers `sum`) of tiles [begin, end).
  void add_mass(const AttentionItem& it, int64_t begin, int64_t end, const float* max, const float* sum,
                Scratch& sc) const {
    const int64_t G = s_.group;
    for (int64_t index = begin; index < end; ++index) {
      const TileView t = tile(it, index, sc);
      for (int64_t q = t.first_query; q < it.n_queries; ++q) {
        if (!t.all_visible && !visibility(t, it.first_pos + q, sc)) continue;
        scores(it, t, q, t.all_visible, sc);
        for (int64_t h = 0; h < G; ++h) {
          const int64_t r = q * G + h;
          float* w = sc.scores.data() + h * t.n;
          exp_shifted(w, max[r], t.n);
          for (int64_t j = 0; j < t.n; ++j) {
            const float weight = w[j] / sum[r];
            if (it.mass_sum) it.mass_sum[t.mass_index + j] += weight;
            if (it.mass_last && q == it.n_queries - 1) it.mass_last[t.mass_index + j] += weight;
          }
        }
      }
    }
  }

  // The whole item with matrix products over a temporary fp32 copy of its keys.
  void blas(const AttentionItem& it, float* out, Scratch& sc) const {
    const int64_t D = s_.dim, G = s_.group, n_keys = it.n_cached + it.n_queries;
    auto keys = at::empty({n_keys, D}, at::kFloat), values = at::empty({n_keys, D}, at::kFloat);
    std::vector<int32_t> pos(n_keys), evict_at(n_keys);
    float *kd = keys.data_ptr<float>(), *vd = values.data_ptr<float>();
    const int64_t n_tiles = tiles(it);
    for (int64_t index = 0; index < n_tiles; ++index) {
      const TileView t = tile(it, index, sc, true);
      for (int64_t j = 0; j < t.n; ++j) {
        std::copy(t.k + j * t.stride, t.k + j * t.stride + D, kd + (t.mass_index + j) * D);
        std::copy(t.v + j * t.stride, t.v + j * t.stride + D, vd + (t.mass_index + j) * D);
        pos[t.mass_index + j] = t.pos[j];
        evict_at[t.mass_index + j] = t.evict_at[j];
      }
    }
    for (int64_t q0 = 0; q0 < it.n_queries; q0 += kBlasQueryTile) {
      const int64_t nq = std::min(kBlasQueryTile, it.n_queries - q0);
      const int64_t visible_keys = it.n_cached + q0 + nq;  // later step keys come after every query here
      auto queries = at::from_blob(const_cast<float*>(query(it, q0, 0)), {nq, G, D}, {s_.n_heads * D, D, 1},
                                   at::kFloat)
                         .reshape({nq * G, D});
      auto scores = at::mm(queries, keys.narrow(0, 0, visible_keys).t());
      float* sd = scores.data_ptr<float>();
      for (int64_t q = 0; q < nq; ++q) {
        const int64_t query_pos = it.first_pos + q0 + q;
        for (int64_t h = 0; h < G; ++h) {
          float* row = sd + (q * G + h) * visible_keys;
          for (int64_t j = 0; j < visible_keys; ++j)
            row[j] = pos[j] <= query_pos && query_pos < evict_at[j] ? row[j] * s_.scale : kNegInf;
        }
      }
      auto weights = at::softmax(scores, 1);
      auto o = at::mm(weights, values.narrow(0, 0, visible_keys));  // [nq * G, D]
      const float* od = o.data_ptr<float>();
      for (int64_t q = 0; q < nq; ++q)
        std::copy(od + q * G * D, od + (q + 1) * G * D,
                  out + ((it.row0 + q0 + q) * s_.n_heads + it.kv_head * G) * D);
      if (it.mass_sum) {
        auto col = weights.sum(0);
        const float* cd = col.data_ptr<float>();
        for (int64_t j = 0; j < visible_keys; ++j) it.mass_sum[j] += cd[j];
      }
      if (it.mass_last && q0 + nq == it.n_queries) {
        auto last = weights.narrow(0, (nq - 1) * G, G).sum(0);
        const float* ld = last.data_ptr<float>();
        for (int64_t j = 0; j < visible_keys; ++j) it.mass_last[j] += ld[j];
      }
    }
  }

  const Shape& shape() const { return s_; }

 private:
  Shape s_;
  const float* q_;
  const uint8_t *pool_k_, *pool_v_, *step_k_, *step_v_;
  int64_t group_;
  const attn::Kernels* isa_;
};

// A piece of work: tiles [begin, end) of one item, or the whole item through BLAS.
struct Unit {
  int64_t item, begin, end;
  bool blas;
  int64_t cost;
};

// The units and jobs of a call, kept on the calling thread from call to call (a decode step
// plans once per layer): once their vectors have grown, planning allocates nothing.
struct Plan {
  std::vector<Unit> units, job_units;
  std::vector<std::pair<int64_t, int64_t>> item_units;  // first unit, count
  std::vector<std::vector<int64_t>> jobs;               // the first n_jobs are this call's
  size_t n_jobs = 0;
  std::vector<int64_t> decode_items_per_head, order;

  void start(size_t n_items, int64_t n_kv) {
    units.clear();
    job_units.clear();
    item_units.resize(n_items);
    n_jobs = 0;
    decode_items_per_head.assign(static_cast<size_t>(n_kv), 0);
  }
  void add_job(int64_t unit) {
    if (n_jobs == jobs.size()) jobs.emplace_back();
    jobs[n_jobs++].assign(1, unit);
  }
};

// Runs fn(unit index) over all units, costliest first, each thread taking the next unit when it is
// done so that uneven items balance out: on OpenMP's threads where a unit calls BLAS, else on the
// team (parallel.h).
template <typename Fn>
void run_units(const std::vector<Unit>& units, std::vector<int64_t>& order, Threads where, Fn fn) {
  order.resize(units.size());
  for (size_t i = 0; i < units.size(); ++i) order[i] = static_cast<int64_t>(i);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return units[a].cost > units[b].cost; });
  parallel_chunks(static_cast<int64_t>(units.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) fn(order[i]);
  }, where);
}

template <typename E>
at::Tensor run(const Shape& shape, const at::Tensor& q, const at::Tensor& pool_k, const at::Tensor& pool_v,
               const at::Tensor& step_k, const at::Tensor& step_v, const std::vector<AttentionItem>& items,
               CpuIsa isa, at::Tensor* kept) {
  const Kernel<E> kernel(shape, q, pool_k, pool_v, step_k, step_v, isa);
  const int64_t D = shape.dim, G = shape.group;
  const std::array<int64_t, 3> out_shape{q.size(0), shape.n_heads, D};
  auto out = kept ? kept_or_empty(*kept, out_shape, at::kFloat) : at::empty(out_shape, at::kFloat);
  float* od = out.data_ptr<float>();

  thread_local Plan plan;
  plan.start(items.size(), shape.n_kv);
  std::vector<Unit>& units = plan.units;
  auto& item_units = plan.item_units;
  Threads where = Threads::Team;
  // Long decode items in pieces, so that a small batch still keeps every thread busy.
  for (size_t i = 0; i < items.size(); ++i) {
    const auto& it = items[i];
    const int64_t first = static_cast<int64_t>(units.size());
    const int64_t n_tiles = kernel.tiles(it);
    if (it.n_queries >= kBlasMinQueries) {
      where = Threads::OpenMP;
      units.push_back({static_cast<int64_t>(i), 0, n_tiles, true, n_tiles * it.n_queries});
    } else {
      for (int64_t b = 0; b < std::max<int64_t>(n_tiles, 1); b += kPieceTiles) {
        const int64_t e = std::min(n_tiles, b + kPieceTiles);
        units.push_back({static_cast<int64_t>(i), b, e, false, (e - b) * it.n_queries});
      }
    }
    item_units[i] = {first, static_cast<int64_t>(units.size()) - first};
  }

  // Decode pieces of one KV head over the same blocks (forked sequences sharing their prompt's)
  // run as one job: each block is read from memory once and folded into every piece's own
  // partial while it is in cache, each piece in the order it would take alone (same bits).
  const std::vector<std::vector<int64_t>>& jobs = plan.jobs;
  std::vector<Unit>& job_units = plan.job_units;
  bool may_share = false;
  for (const auto& it : items) may_share |= it.n_queries == 1 && ++plan.decode_items_per_head[it.kv_head] > 1;
  if (!may_share) {
    for (size_t u = 0; u < units.size(); ++u) plan.add_job(static_cast<int64_t>(u));
    job_units = units;
  } else {
    std::map<std::tuple<int64_t, int64_t, int64_t, int32_t>, std::vector<size_t>> by_start;  // -> jobs
    for (size_t u = 0; u < units.size(); ++u) {
      const Unit& unit = units[u];
      const AttentionItem& it = items[unit.item];
      const bool shareable =
          !unit.blas && it.n_queries == 1 && unit.begin < unit.end && unit.end <= kernel.cached_tiles(it);
      if (shareable) {
        auto& candidates = by_start[{it.kv_head, unit.begin, unit.end, it.blocks[unit.begin]}];
        const auto same = std::find_if(candidates.begin(), candidates.end(), [&](size_t j) {
          const AttentionItem& other = items[units[jobs[j][0]].item];
          return std::equal(it.blocks + unit.begin, it.blocks + unit.end, other.blocks + unit.begin);
        });
        if (same != candidates.end()) {
          plan.jobs[*same].push_back(static_cast<int64_t>(u));
          job_units[*same].cost += unit.cost;
          continue;
        }
        candidates.push_back(plan.n_jobs);
      }
      plan.add_job(static_cast<int64_t>(u));
      job_units.push_back(unit);
    }
  }
  // Buffers kept from call to call (a decode step calls this once per layer): the partials on
  // this thread, the scratch on each worker.
  thread_local std::vector<Partial> kept_partials, kept_finals;
  std::vector<Partial>& partials = kept_partials;
  if (partials.size() < units.size()) partials.resize(units.size());
  run_units(job_units, plan.order, where, [&](int64_t j) {
    thread_local Scratch sc;
    sc.reserve(kernel.scratch_rows(), D, G);
    const std::vector<int64_t>& job = jobs[j];
    const Unit& first = units[job[0]];
    if (first.blas) {
      kernel.blas(items[first.item], od, sc);
      return;
    }
    for (int64_t u : job) partials[u].reset(items[units[u].item].n_queries * G, D);
    if (job.size() == 1) {
      kernel.accumulate(items[first.item], first.begin, first.end, partials[job[0]], sc);
      return;
    }
    for (int64_t index = first.begin; index < first.end; ++index) {
      if (index + 1 < first.end) kernel.prefetch(items[first.item], index + 1);
      for (int64_t u : job) kernel.accumulate(items[units[u].item], index, index + 1, partials[u], sc);
    }
  });

  // Merge each item's pieces into its output rows; keep the final maxima and sums for the
  // attention-mass pass.
  std::vector<Partial>& finals = kept_finals;
  if (finals.size() < items.size()) finals.resize(items.size());
  // A few items' merges (one decoding sequence's KV heads) cost less than waking the threads.
  parallel_for(0, static_cast<int64_t>(items.size()), kMergeGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const auto& it = items[i];
      const auto [first, count] = item_units[i];
      if (units[first].blas) continue;
      const int64_t rows = it.n_queries * G;
      Partial& f = finals[i];
      f.reset(rows, D);
      for (int64_t u = first; u < first + count; ++u)
        for (int64_t r = 0; r < rows; ++r) f.max[r] = std::max(f.max[r], partials[u].max[r]);
      for (int64_t u = first; u < first + count; ++u) {
        const Partial& p = partials[u];
        for (int64_t r = 0; r < rows; ++r) {
          if (p.max[r] == kNegInf) continue;
          const float w = std::exp(p.max[r] - f.max[r]);
          f.sum[r] += w * p.sum[r];
          axpy(f.acc.data() + r * D, w, p.acc.data() + r * D, D);
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t q = r / G, h = r % G;
        float* o = od + ((it.row0 + q) * shape.n_heads + it.kv_head * G + h) * D;
        const float inv = f.sum[r] > 0 ? 1.0f / f.sum[r] : 0.0f;
        for (int64_t d = 0; d < D; ++d) o[d] = f.acc[r * D + d] * inv;
      }
    }
  }, where);
  bool want_mass = false;
  for (const auto& it : items) want_mass |= it.mass_sum != nullptr || it.mass_last != nullptr;
  if (want_mass) {
    run_units(units, plan.order, where, [&](int64_t u) {
      const Unit& unit = units[u];
      const AttentionItem& it = items[unit.item];
      if (unit.blas || (!it.mass_sum && !it.mass_last)) return;
      thread_local Scratch sc;
      sc.reserve(kernel.scratch_rows(), D, G);
      const Partial& f = finals[unit.item];
      kernel.add_mass(it, unit.begin, unit.end, f.max.data(), f.sum.data(), sc);
    });
  }
  return out;
}

// A message made only when the check fails: a decode step makes thousands of these checks.
void check(bool ok, const char* what) {
  if (!ok) fail("paged attention", what);
}

}  // namespace

at::Tensor paged_attention(const at::Tensor& q, const at::Tensor& pool_k, const at::Tensor& pool_v,
                           const at::Tensor& step_k, const at::Tensor& step_v, const std::vector<AttentionItem>& items,
                           CpuIsa isa, at::Tensor* kept) {
  if (!cpu_isa_supported(isa)) fail("paged attention", std::string("this CPU lacks ") + cpu_isa_name(isa));
  check(q.dim() == 3 && q.scalar_type() == at::kFloat && q.is_contiguous(), "q must be contiguous fp32 [T, heads, D]");
  check(pool_k.dim() == 3 && pool_k.sizes() == pool_v.sizes() && pool_k.is_contiguous() && pool_v.is_contiguous(),
        "pool K and V must be contiguous [blocks, block_size, D] of one shape");
  check(step_k.dim() == 3 && step_k.sizes() == step_v.sizes() && step_k.is_contiguous() && step_v.is_contiguous(),
        "step K and V must be contiguous [T, kv_heads, D] of one shape");
  const auto dtype = pool_k.scalar_type();
  check(pool_v.scalar_type() == dtype && step_k.scalar_type() == dtype && step_v.scalar_type() == dtype,
        "pool and step K/V must share one dtype");
  const int64_t T = q.size(0), n_heads = q.size(1), D = q.size(2), n_kv = step_k.size(1);
  const int64_t row_bytes = kv_row_bytes(dtype, D);
  if (step_k.size(0) != T || step_k.size(2) * step_k.element_size() != row_bytes ||
      pool_k.size(2) * pool_k.element_size() != row_bytes)
    fail("paged attention", "q, step and pool disagree on T or D (rows of " + std::to_string(row_bytes) + " bytes for " +
                                kv_dtype_name(dtype) + ")");
  check(n_kv > 0 && n_heads % n_kv == 0, "query heads must be a multiple of KV heads");
  for (const auto& it : items) {
    check(it.n_queries >= 1 && it.row0 >= 0 && it.row0 + it.n_queries <= T, "item rows outside the step");
    check(it.kv_head >= 0 && it.kv_head < n_kv, "item KV head out of range");
    check(it.n_cached >= 0 && (it.n_cached == 0 || (it.blocks && it.pos && it.evict_at)), "item without slot data");
  }
  const Shape shape{n_heads, n_kv, n_heads / n_kv, D, pool_k.size(1), static_cast<float>(1.0 / std::sqrt(double(D))),
                    row_bytes};
  switch (dtype) {
    case at::kFloat: return run<float>(shape, q, pool_k, pool_v, step_k, step_v, items, isa, kept);
    case at::kBFloat16: return run<c10::BFloat16>(shape, q, pool_k, pool_v, step_k, step_v, items, isa, kept);
    case at::kHalf: return run<c10::Half>(shape, q, pool_k, pool_v, step_k, step_v, items, isa, kept);
    case kQ8: return run<Q8>(shape, q, pool_k, pool_v, step_k, step_v, items, isa, kept);
    default: fail("paged attention", std::string("unsupported KV dtype ") + c10::toString(dtype));
  }
}

}  // namespace dms::cpu
