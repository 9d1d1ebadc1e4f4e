#include "dms/eval/bench_setup.h"

#include "dms/cache/cache_sizing.h"
#include "dms/kernels/cpu/kv_quant.h"
#include "dms/util/error.h"

namespace dms::eval {

CacheSpec BenchSetup::spec(const std::string& name) const {
  const size_t colon = name.find(':');
  if (colon == std::string::npos) return {name, kv_dtype};
  const auto dtype = cpu::kv_dtype_from_name(name.substr(colon + 1));
  if (!dtype) fail("bench", "'" + name + "': the KV dtype after ':' must be f32, bf16, f16 or q8");
  return {name.substr(0, colon), *dtype};
}

std::unique_ptr<PagedKVCache> BenchSetup::dense_cache(const std::string& name, int64_t sequences, int64_t tokens) const {
  const ModelConfig& c = model.info.config;
  const CacheSpec cs = spec(name);
  return std::make_unique<PagedKVCache>(c, dense_cache_options(c, cs.kv_dtype, block_size, sequences, tokens),
                                        make_policy(cs.policy, policy));
}

std::unique_ptr<PagedKVCache> BenchSetup::cache_of_bytes(const std::string& name, int64_t bytes) const {
  const ModelConfig& c = model.info.config;
  const CacheSpec cs = spec(name);
  const PagedCacheOptions o{cs.kv_dtype, block_size,
                            PagedKVCache::blocks_per_layer_for(c, cs.kv_dtype, block_size, bytes)};
  if (o.blocks_per_layer < 1) {
    const int64_t one_block = c.n_layers * 2 * block_size * cpu::kv_row_bytes(cs.kv_dtype, c.head_dim);
    fail("kv budget", std::to_string(bytes) + " bytes hold no block (a block in every layer takes " +
                          std::to_string(one_block) + " bytes)");
  }
  return std::make_unique<PagedKVCache>(c, o, make_policy(cs.policy, policy));
}

int64_t BenchSetup::live_kv_bytes(const std::string& name, int64_t live_slots) const {
  return live_slots * 2 * cpu::kv_row_bytes(spec(name).kv_dtype, model.info.config.head_dim);
}

int64_t decode_weight_bytes(const Weights& w) {
  // All but the embedding table, of which a step reads one row per token (tied, it is the head too).
  return weight_bytes(w) - (w.lm_head.is_same(w.embed) ? 0 : w.embed.nbytes());
}

}  // namespace dms::eval
