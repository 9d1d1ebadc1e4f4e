#include "dms/eval/bench_context.h"

#include <algorithm>
#include <string>

#include "dms/kernels/cpu/kv_quant.h"
#include "dms/util/error.h"

namespace dms::eval {

std::pair<at::Tensor, at::Tensor> synthetic_kv(const ModelConfig& c, int64_t rows, at::ScalarType dtype) {
  const at::ScalarType as = dtype == cpu::kQ8 ? at::kFloat : dtype;  // the cache quantizes q8 as it stores
  return {at::randn({rows, c.n_kv_heads, c.head_dim}).to(as), at::randn({rows, c.n_kv_heads, c.head_dim}).to(as)};
}

SequenceId store_context(PagedKVCache& cache, const at::Tensor& k, const at::Tensor& v, int64_t context, int64_t chunk) {
  if (context < 1 || chunk < 1 || k.size(0) < std::min(chunk, context) || v.size(0) < std::min(chunk, context))
    fail("store_context", "context " + std::to_string(context) + ", chunk " + std::to_string(chunk) + ", " +
                              std::to_string(k.size(0)) + " key rows: need a context and chunk of at least 1 and "
                              "min(chunk, context) rows");
  const SequenceId id = cache.add_sequence();
  try {
    for (int64_t done = 0; done < context; done += chunk) {
      const int64_t n = std::min(chunk, context - done);
      cache.begin_step({{id, n}});
      for (int64_t l = 0; l < cache.n_layers(); ++l) cache.store(l, k.narrow(0, 0, n), v.narrow(0, 0, n), at::Tensor());
      cache.end_step();
    }
  } catch (...) {
    if (cache.in_step()) cache.abort_step();
    cache.remove_sequence(id);
    throw;
  }
  return id;
}

}  // namespace dms::eval
