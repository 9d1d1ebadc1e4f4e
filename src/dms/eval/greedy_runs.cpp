#include "dms/eval/greedy_runs.h"

#include "dms/cache/cache_sizing.h"
#include "dms/engine/engine.h"
#include "dms/util/error.h"

namespace dms::eval {

GreedyRun run_greedy(const Model& model, const PolicyUnderTest& policy, const std::vector<std::vector<int32_t>>& prompts,
                     int64_t new_tokens, const EngineSettings& s) {
  if (new_tokens < 1) fail("greedy runs", "need at least 1 new token");
  const ModelConfig& c = model.info.config;
  int64_t longest = 0;
  for (const auto& p : prompts) longest = std::max<int64_t>(longest, static_cast<int64_t>(p.size()));
  // Room for every running sequence kept dense, so the engine never preempts (which would only
  // cost time): a sequence stores its prompt and all but the last generated token.
  const int64_t sequences = std::min<int64_t>(static_cast<int64_t>(prompts.size()), s.max_running);
  PagedKVCache cache(c, dense_cache_options(c, s.kv_dtype, s.block_size, sequences, longest + new_tokens),
                     make_policy(policy.policy, policy.options));
  Engine engine(model, cache, EngineOptions{s.step_tokens, s.max_running});

  GenerationParams params;
  params.max_tokens = new_tokens;  // sampling defaults: temperature 0, greedy
  std::vector<int64_t> requests;
  for (const auto& p : prompts) requests.push_back(engine.submit(p, params));
  engine.run();

  GreedyRun run;
  run.compression.n_layers = c.n_layers;
  run.compression.n_kv_heads = c.n_kv_heads;
  for (int64_t r : requests) {
    const GenerationResult& g = engine.result(r);
    run.tokens.push_back(g.tokens);
    run.texts.push_back(g.text);
    run.compression.sequences.push_back(from_stats(g.cache));
  }
  run.tokens_run = engine.stats().tokens_run;
  run.seconds = engine.stats().seconds;
  return run;
}

}  // namespace dms::eval
