#include "dms/eval/bench_samples.h"

#include <algorithm>

#include "dms/engine/engine.h"
#include "dms/util/error.h"

namespace dms::eval {

std::vector<SamplesResult> measure_samples(const BenchSetup& s, const std::vector<std::string>& policies,
                                           int64_t context, int64_t samples, int64_t tokens, bool shared,
                                           int64_t repeats) {
  if (context < 1 || samples < 1 || tokens < 2 || repeats < 1)
    fail("measure_samples", "context, samples and repeats must be at least 1, tokens at least 2");
  const at::Tensor random = at::randint(s.model.info.config.vocab_size, {context}, at::kInt);
  const std::vector<int32_t> prompt(random.data_ptr<int32_t>(), random.data_ptr<int32_t>() + context);
  std::vector<GenerationParams> params(samples);
  for (int64_t i = 0; i < samples; ++i) {
    params[i].max_tokens = tokens;
    params[i].sampling.temperature = 1.0;
    params[i].sampling.seed = static_cast<uint64_t>(i);
  }
  std::vector<SamplesResult> out;
  for (const auto& policy : policies) out.push_back({policy, context, samples, tokens, shared, {}, {}, 0, 0});
  for (int64_t r = 0; r < repeats; ++r)
    for (auto& m : out) {
      auto cache = s.dense_cache(m.policy, samples, context + tokens);
      Engine engine(s.model, *cache, EngineOptions{.max_step_tokens = s.chunk, .max_running = samples});
      std::vector<int64_t> ids;
      if (shared) {
        ids = engine.submit_samples(prompt, params);
      } else {
        for (const auto& p : params) ids.push_back(engine.submit(prompt, p));
      }
      const auto generated = [&] {
        int64_t n = 0;
        for (int64_t id : ids) n += static_cast<int64_t>(engine.result(id).tokens.size());
        return n;
      };
      const auto t0 = std::chrono::steady_clock::now();
      double first = -1;
      int64_t at_first = 0;  // tokens by then: without sharing, the first samples start decoding early
      while (!engine.idle()) {
        engine.step();
        if (first < 0 && std::all_of(ids.begin(), ids.end(), [&](int64_t id) { return !engine.result(id).tokens.empty(); })) {
          first = ms_since(t0) / 1e3;
          at_first = generated();
        }
      }
      const double total = ms_since(t0) / 1e3;
      const int64_t decoded = generated() - at_first;
      m.first_token_s.push_back(first);
      m.decode_tokens_per_s.push_back(total > first ? static_cast<double>(decoded) / (total - first) : 0.0);
      m.peak_bytes_held = engine.stats().peak_bytes_held;
      m.peak_dense_bytes = engine.stats().peak_dense_bytes;
    }
  return out;
}

}  // namespace dms::eval
