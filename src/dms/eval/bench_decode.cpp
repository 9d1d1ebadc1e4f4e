#include "dms/eval/bench_decode.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <memory>

#include "dms/eval/bench_context.h"
#include "dms/kernels/cpu/parallel.h"
#include "dms/util/error.h"

namespace dms::eval {
namespace {

// One policy's cache with its sequences and its result so far.
struct Contender {
  std::unique_ptr<PagedKVCache> cache;
  std::vector<StepSequence> step;
  DecodeResult r;
};

Contender fill(const BenchSetup& s, const std::string& policy, int64_t context, int64_t batch, int64_t decode_steps) {
  Contender x;
  x.cache = s.dense_cache(policy, batch, context + decode_steps + 1);
  const auto [k, v] = synthetic_kv(s.model.info.config, std::min(context, s.chunk), s.kv_dtype);
  for (int64_t b = 0; b < batch; ++b) x.step.push_back({store_context(*x.cache, k, v, context, s.chunk), 1});
  const CacheStats filled = x.cache->stats();
  x.r.policy = policy;
  x.r.context = context;
  x.r.batch = batch;
  x.r.kv_bytes = filled.bytes_held;
  x.r.dense_bytes = filled.dense_bytes;
  x.r.live_slots = filled.live_slots;
  x.r.compression_ratio = filled.compression_ratio;
  return x;
}

}  // namespace

std::vector<DecodeResult> measure_decode(const BenchSetup& s, const std::vector<std::string>& policies, int64_t context,
                                         int64_t batch, int64_t steps, int64_t repeats) {
  if (context < 1 || batch < 1 || steps < 1 || repeats < 1)
    fail("measure_decode", "context, batch, steps and repeats must be at least 1");
  std::vector<Contender> contenders;
  for (const auto& policy : policies) contenders.push_back(fill(s, policy, context, batch, steps * repeats + 1));
  const Transformer& model = *s.model.transformer;
  const at::Tensor tokens = at::randint(s.model.info.config.vocab_size, {batch}, at::kLong);
  auto decode = [&](Contender& x) {
    const cpu::TeamScope team(cpu::team_step(batch, 1));  // as Engine::step
    const c10::InferenceMode inference;
    x.cache->begin_step(x.step);
    model.logits(model.forward(tokens, x.cache->step_positions(), *x.cache));
    x.cache->end_step();
  };
  for (auto& x : contenders) decode(x);
  for (int64_t r = 0; r < repeats; ++r)
    for (auto& x : contenders)
      for (int64_t i = 0; i < steps; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        decode(x);
        x.r.step_ms.push_back(ms_since(t0));
      }
  std::vector<DecodeResult> out;
  for (auto& x : contenders) out.push_back(std::move(x.r));
  return out;
}

}  // namespace dms::eval
