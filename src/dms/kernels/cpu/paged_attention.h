// Attention of a step's queries over per-(sequence, KV head) paged keys, on the CPU.
//
// A work item is one (sequence, KV head) of the step. Its keys are the slots the head has
// kept from earlier steps (in blocks of a layer's pool) followed by the step's own keys (still
// in the step's K/V tensors), and each key carries `pos` and `evict_at`: query position i sees
// the key iff pos <= i < evict_at (dms-spec section 2; policies other than DMS leave evict_at
// at kNever). Softmax is online and in fp32 whatever the KV dtype (f32, bf16, f16 or q8).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "dms/kernels/cpu/quant_matmul.h"

namespace dms::cpu {

// evict_at of a key that no decision has flagged: every later query sees it.
constexpr int32_t kNever = std::numeric_limits<int32_t>::max();

// Items with at least this many queries (prefill chunks) gather their keys and use BLAS:
// below it the matrices are too thin for BLAS to beat the tiled loop.
constexpr int64_t kBlasMinQueries = 16;

struct AttentionItem {
  int64_t kv_head = 0;
  int64_t row0 = 0;        // first row of the item's queries in q/out and of its keys in step_k/step_v
  int64_t n_queries = 0;   // rows row0 .. row0 + n_queries - 1, at positions first_pos + t
  int64_t first_pos = 0;
  // Keys kept from earlier steps: slots 0 .. n_cached - 1, slot s in pool block
  // blocks[s / block_size] at row s % block_size, with pos[s] and evict_at[s].
  const int32_t* blocks = nullptr;
  int64_t n_cached = 0;
  const int32_t* pos = nullptr;
  const int32_t* evict_at = nullptr;
  // A decision taken in this step about a cached key (DMS decides key first_pos - 1 with the
  // logit of token first_pos) overrides evict_at[patched_slot] without touching the cache.
  int64_t patched_slot = -1;
  int32_t patched_evict_at = kNever;
  // evict_at of the step's own keys (key t is at position first_pos + t); nullptr: all kNever.
  const int32_t* step_evict_at = nullptr;
  // Optional outputs, n_cached + n_queries floats each (cached slots, then the step's keys),
  // zeroed by the caller: the attention weight each key received, summed over the group's
  // query heads and the item's queries (mass_sum) or from its last query only (mass_last).
  float* mass_sum = nullptr;
  float* mass_last = nullptr;
};

// q: [T, n_heads, D] fp32 contiguous (T = all rows of the step). pool_k, pool_v:
// [num_blocks, block_size, row] in the KV dtype. step_k, step_v: [T, n_kv, row], same dtype. A row
// is D values, or for q8 (kv_quant.h) kv_row_bytes(kQ8, D) bytes.
// Returns [T, n_heads, D] fp32; rows no item covers are left uninitialised. Query head h
// reads KV head h / (n_heads / n_kv). Items run in parallel (parallel.h); a long
// item may be split over several threads; chunks of many queries use BLAS on a temporary
// copy of the item's live keys. The inner loops read the rows as stored and convert them in
// registers with the `isa`'s vectors (AVX2 or AVX-512, when the head dim is a multiple of their
// width), else convert each block to fp32 first (portable). With `kept`, the result goes into it
// where kept_or_empty (util/kept_tensor.h) allows.
at::Tensor paged_attention(const at::Tensor& q, const at::Tensor& pool_k, const at::Tensor& pool_v,
                           const at::Tensor& step_k, const at::Tensor& step_v, const std::vector<AttentionItem>& items,
                           CpuIsa isa = default_cpu_isa(), at::Tensor* kept = nullptr);

}  // namespace dms::cpu
