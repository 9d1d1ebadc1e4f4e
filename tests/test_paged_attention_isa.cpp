// The CPU attention kernel's inner loops in every ISA this CPU runs (portable, AVX2, AVX-512),
// called directly on a pool of random blocks, against attention in double over the same stored
// values gathered in the test. The cache-level tests run only the default ISA.
//
// Tolerance 2e-5 of max |ref|, as in test_paged_cache.cpp: fp32 sums in another order.
#include <gtest/gtest.h>

#include <numeric>
#include <random>

#include "dms/kernels/cpu/kv_quant.h"
#include "dms/kernels/cpu/paged_attention.h"
#include "paged_cache_reference.h"

namespace dms::test {
namespace {

struct Case {
  int64_t n_kv, group, dim, block_size;
  at::ScalarType dtype;
};

void check_case(const Case& c, uint64_t seed) {
  SCOPED_TRACE("kv heads " + std::to_string(c.n_kv) + ", group " + std::to_string(c.group) + ", D " +
               std::to_string(c.dim) + ", block " + std::to_string(c.block_size) + ", " + cpu::kv_dtype_name(c.dtype));
  std::mt19937 rng(static_cast<uint32_t>(seed));
  at::manual_seed(seed);
  const int64_t n_heads = c.n_kv * c.group, D = c.dim;
  // Items: (sequence, KV head) pairs, each with its own cached keys and 1-3 step queries.
  const int64_t sequences = 3;
  std::vector<int64_t> cached(sequences), queries(sequences), row0(sequences);
  int64_t T = 0, blocks_needed = 0;
  for (int64_t s = 0; s < sequences; ++s) {
    cached[s] = static_cast<int64_t>(rng() % 200);
    queries[s] = 1 + static_cast<int64_t>(rng() % 3);
    row0[s] = T;
    T += queries[s];
    blocks_needed += c.n_kv * ((cached[s] + c.block_size - 1) / c.block_size);
  }
  const at::Tensor pool_x_k = at::randn({blocks_needed + 2, c.block_size, D});
  const at::Tensor pool_x_v = at::randn({blocks_needed + 2, c.block_size, D});
  const at::Tensor pool_k = cpu::to_kv_rows(pool_x_k, c.dtype), pool_v = cpu::to_kv_rows(pool_x_v, c.dtype);
  const at::Tensor step_x_k = at::randn({T, c.n_kv, D}), step_x_v = at::randn({T, c.n_kv, D});
  const at::Tensor step_k = cpu::to_kv_rows(step_x_k, c.dtype), step_v = cpu::to_kv_rows(step_x_v, c.dtype);
  const at::Tensor q = 2 * at::randn({T, n_heads, D});
  const at::Tensor ks = stored_values(pool_x_k, c.dtype), vs = stored_values(pool_x_v, c.dtype);
  const at::Tensor sk = stored_values(step_x_k, c.dtype), sv = stored_values(step_x_v, c.dtype);

  std::vector<int32_t> order(blocks_needed + 2);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<std::vector<int32_t>> pos(sequences * c.n_kv), evict(sequences * c.n_kv);
  std::vector<cpu::AttentionItem> items;
  at::Tensor ref = at::zeros({T, n_heads, D}, at::kDouble);
  int64_t next_block = 0;
  for (int64_t s = 0; s < sequences; ++s)
    for (int64_t g = 0; g < c.n_kv; ++g) {
      const int64_t i = s * c.n_kv + g, n = cached[s], first_pos = 300;
      const int32_t* blocks = order.data() + next_block;
      next_block += (n + c.block_size - 1) / c.block_size;
      for (int64_t j = 0; j < n; ++j) {
        pos[i].push_back(static_cast<int32_t>(rng() % first_pos));
        evict[i].push_back(rng() % 3 == 0 ? static_cast<int32_t>(first_pos + rng() % 4) : cpu::kNever);
      }
      items.push_back({.kv_head = g, .row0 = row0[s], .n_queries = queries[s], .first_pos = first_pos,
                       .blocks = blocks, .n_cached = n, .pos = pos[i].data(), .evict_at = evict[i].data()});
      // The reference: the item's keys gathered in slot order, then its step keys.
      std::vector<at::Tensor> kr, vr;
      for (int64_t j = 0; j < n; ++j) {
        kr.push_back(ks[blocks[j / c.block_size]][j % c.block_size]);
        vr.push_back(vs[blocks[j / c.block_size]][j % c.block_size]);
      }
      for (int64_t t = 0; t < queries[s]; ++t) {
        kr.push_back(sk[row0[s] + t][g]);
        vr.push_back(sv[row0[s] + t][g]);
      }
      const at::Tensor K = at::stack(kr), V = at::stack(vr);
      for (int64_t t = 0; t < queries[s]; ++t) {
        const int64_t query_pos = first_pos + t;
        at::Tensor visible = at::zeros({K.size(0)}, at::kBool);
        for (int64_t j = 0; j < n; ++j) visible[j] = pos[i][j] <= query_pos && query_pos < evict[i][j];
        for (int64_t u = 0; u <= t; ++u) visible[n + u] = true;
        for (int64_t h = 0; h < c.group; ++h) {
          const at::Tensor qd = q[row0[s] + t][g * c.group + h].to(at::kDouble);
          const at::Tensor scores = at::matmul(K, qd) / std::sqrt(static_cast<double>(D));
          const at::Tensor w = at::softmax(scores.masked_fill(visible.logical_not(), -INFINITY), 0);
          ref[row0[s] + t][g * c.group + h] = at::matmul(w, V);
        }
      }
    }
  for (cpu::CpuIsa isa : {cpu::CpuIsa::Scalar, cpu::CpuIsa::Avx2, cpu::CpuIsa::Avx512}) {
    if (!cpu::cpu_isa_supported(isa)) continue;
    const at::Tensor out = cpu::paged_attention(q, pool_k, pool_v, step_k, step_v, items, isa);
    EXPECT_LE(relative_error(out, ref), 2e-5) << cpu::cpu_isa_name(isa);
  }
}

TEST(PagedAttentionIsa, EveryIsaMatchesTheReference) {
  const Case cases[] = {{3, 3, 64, 16, at::kBFloat16}, {2, 4, 128, 7, at::kChar},   {1, 1, 64, 16, at::kHalf},
                        {2, 8, 32, 5, at::kFloat},     {3, 5, 80, 16, at::kChar},   {1, 6, 64, 1, at::kChar},
                        {2, 2, 20, 3, at::kBFloat16},  {4, 7, 128, 32, at::kBFloat16}};
  uint64_t seed = 50;
  for (const Case& c : cases) check_case(c, seed++);
}

// Forked sequences decode over the same blocks (each with its own view of which keys it still
// sees): read together, each gets the bits it gets alone, in every ISA, in tiles all of them see
// whole and in tiles where each has evicted keys of its own. One item's block in the middle is its
// own copy (copied on write), so its pieces there cannot share.
TEST(PagedAttentionIsa, ItemsSharingBlocksGetTheBitsTheyGetAlone) {
  std::mt19937 rng(11);
  at::manual_seed(11);
  const int64_t n_kv = 2, group = 3, D = 64, block = 16, n_heads = n_kv * group, samples = 5;
  const int64_t n_cached = 40 * block + 5;  // three pieces of 16 blocks, the last one partial
  const int64_t n_blocks = (n_cached + block - 1) / block;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kChar}) {
    SCOPED_TRACE(cpu::kv_dtype_name(dtype));
    const at::Tensor pool_k = cpu::to_kv_rows(at::randn({n_kv * n_blocks + 1, block, D}), dtype);
    const at::Tensor pool_v = cpu::to_kv_rows(at::randn({n_kv * n_blocks + 1, block, D}), dtype);
    const at::Tensor step_k = cpu::to_kv_rows(at::randn({samples, n_kv, D}), dtype);
    const at::Tensor step_v = cpu::to_kv_rows(at::randn({samples, n_kv, D}), dtype);
    const at::Tensor q = 2 * at::randn({samples, n_heads, D});
    std::vector<std::vector<int32_t>> blocks(n_kv), pos(samples * n_kv), evict(samples * n_kv);
    for (int64_t g = 0; g < n_kv; ++g)
      for (int64_t b = 0; b < n_blocks; ++b) blocks[g].push_back(static_cast<int32_t>(g * n_blocks + b));
    std::vector<int32_t> copied = blocks[1];
    copied[20] = static_cast<int32_t>(n_kv * n_blocks);  // sample 0's own copy of one block
    std::vector<cpu::AttentionItem> items;
    const int64_t first_pos = 2000;
    for (int64_t s = 0; s < samples; ++s)
      for (int64_t g = 0; g < n_kv; ++g) {
        const int64_t i = s * n_kv + g;
        for (int64_t j = 0; j < n_cached; ++j) {
          pos[i].push_back(static_cast<int32_t>(j));
          // Blocks 5-9 lose keys, each sample its own; every sample sees the others whole.
          const bool evicting = j / block >= 5 && j / block < 10;
          evict[i].push_back(evicting && rng() % 4 == 0 ? static_cast<int32_t>(first_pos - 1) : cpu::kNever);
        }
        const int32_t* table = s == 0 && g == 1 ? copied.data() : blocks[g].data();
        items.push_back({.kv_head = g, .row0 = s, .n_queries = 1, .first_pos = first_pos, .blocks = table,
                         .n_cached = n_cached, .pos = pos[i].data(), .evict_at = evict[i].data()});
      }
    for (cpu::CpuIsa isa : {cpu::CpuIsa::Scalar, cpu::CpuIsa::Avx2, cpu::CpuIsa::Avx512}) {
      if (!cpu::cpu_isa_supported(isa)) continue;
      SCOPED_TRACE(cpu::cpu_isa_name(isa));
      const at::Tensor together = cpu::paged_attention(q, pool_k, pool_v, step_k, step_v, items, isa);
      for (int64_t s = 0; s < samples; ++s) {
        std::vector<cpu::AttentionItem> alone(items.begin() + s * n_kv, items.begin() + (s + 1) * n_kv);
        for (auto& it : alone) it.row0 = 0;
        const at::Tensor out = cpu::paged_attention(q.narrow(0, s, 1).contiguous(), pool_k, pool_v,
                                                    step_k.narrow(0, s, 1).contiguous(),
                                                    step_v.narrow(0, s, 1).contiguous(), alone, isa);
        EXPECT_TRUE(at::equal(out[0], together[s])) << "sample " << s;
      }
    }
  }
}

}  // namespace
}  // namespace dms::test
