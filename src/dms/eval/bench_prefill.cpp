#include "dms/eval/bench_prefill.h"

#include <algorithm>

#include "dms/util/error.h"

namespace dms::eval {

std::vector<PrefillResult> measure_prefill(const BenchSetup& s, const std::vector<std::string>& policies, int64_t context,
                                           int64_t repeats) {
  if (context < 1 || repeats < 1) fail("measure_prefill", "context and repeats must be at least 1");
  const Transformer& model = *s.model.transformer;
  const at::Tensor tokens = at::randint(s.model.info.config.vocab_size, {context}, at::kLong);
  std::vector<PrefillResult> out;
  for (const auto& policy : policies) out.push_back({policy, context, {}});
  for (int64_t r = 0; r < repeats; ++r)
    for (auto& p : out) {
      auto cache = s.dense_cache(p.policy, 1, context + 1);
      const SequenceId id = cache->add_sequence();
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t done = 0; done < context; done += s.chunk) {
        const int64_t n = std::min(s.chunk, context - done);
        cache->begin_step({{id, n}});
        const at::Tensor hidden = model.forward(tokens.narrow(0, done, n), cache->step_positions(), *cache);
        model.logits(hidden.narrow(0, n - 1, 1));
        cache->end_step();
      }
      p.tokens_per_s.push_back(static_cast<double>(context) / (ms_since(t0) / 1e3));
    }
  return out;
}

}  // namespace dms::eval
