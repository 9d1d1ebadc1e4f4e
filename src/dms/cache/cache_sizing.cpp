#include "dms/cache/cache_sizing.h"

#include <string>

#include "dms/kernels/cpu/kv_quant.h"
#include "dms/util/error.h"

namespace dms {

int64_t kv_bytes_per_token(const ModelConfig& config, at::ScalarType kv_dtype) {
  return 2 * config.n_layers * config.n_kv_heads * cpu::kv_row_bytes(kv_dtype, config.head_dim);
}

int64_t dense_cache_bytes(const ModelConfig& config, at::ScalarType kv_dtype, int64_t block_size, int64_t sequences,
                          int64_t tokens) {
  if (block_size < 1 || sequences < 0 || tokens < 0)
    fail("cache sizing", "block size " + std::to_string(block_size) + ", sequences " + std::to_string(sequences) +
                             ", tokens " + std::to_string(tokens) + ": need a block size of at least 1 and counts of at least 0");
  const int64_t per_token = kv_bytes_per_token(config, kv_dtype);
  return sequences * (tokens + block_size) * per_token;
}

PagedCacheOptions dense_cache_options(const ModelConfig& config, at::ScalarType kv_dtype, int64_t block_size,
                                      int64_t sequences, int64_t tokens) {
  const int64_t bytes = dense_cache_bytes(config, kv_dtype, block_size, sequences, tokens);
  return {kv_dtype, block_size, PagedKVCache::blocks_per_layer_for(config, kv_dtype, block_size, bytes)};
}

}  // namespace dms
