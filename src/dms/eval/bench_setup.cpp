#include "dms/eval/bench_setup.h"

#include "dms/cache/cache_sizing.h"
#include "dms/kernels/cpu/kv_quant.h"
#include "dms/util/error.h"

namespace dms::eval {

std::unique_ptr<PagedKVCache> BenchSetup::dense_cache(const std::string& policy_name, int64_t sequences,
                                                      int64_t tokens) const {
  const ModelConfig& c = model.info.config;
  return std::make_unique<PagedKVCache>(c, dense_cache_options(c, kv_dtype, block_size, sequences, tokens),
                                        make_policy(policy_name, policy));
}

std::unique_ptr<PagedKVCache> BenchSetup::cache_of_bytes(const std::string& policy_name, int64_t bytes) const {
  const ModelConfig& c = model.info.config;
  const PagedCacheOptions o{kv_dtype, block_size, PagedKVCache::blocks_per_layer_for(c, kv_dtype, block_size, bytes)};
  if (o.blocks_per_layer < 1) {
    const int64_t one_block = c.n_layers * 2 * block_size * cpu::kv_row_bytes(kv_dtype, c.head_dim);
    fail("kv budget", std::to_string(bytes) + " bytes hold no block (a block in every layer takes " +
                          std::to_string(one_block) + " bytes)");
  }
  return std::make_unique<PagedKVCache>(c, o, make_policy(policy_name, policy));
}

int64_t BenchSetup::live_kv_bytes(int64_t live_slots) const {
  return live_slots * 2 * cpu::kv_row_bytes(kv_dtype, model.info.config.head_dim);
}

int64_t decode_weight_bytes(const Weights& w) {
  // All but the embedding table, of which a step reads one row per token (tied, it is the head too).
  return weight_bytes(w) - (w.lm_head.is_same(w.embed) ? 0 : w.embed.nbytes());
}

}  // namespace dms::eval
