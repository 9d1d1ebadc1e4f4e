// Greedy continuations of many prompts under one cache policy, through the batched engine
// (the path `dms generate` takes): prompts are prefilled in chunks of up to `step_tokens`
// tokens, so budget policies meet their budget after each prefill chunk and then after every
// generated token. End-of-sequence tokens do not stop generation, so every continuation has
// the same length and position i of one can be compared with position i of another.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "dms/eval/compression.h"
#include "dms/eval/teacher_forced.h"
#include "dms/model/loader.h"

namespace dms::eval {

struct EngineSettings {
  at::ScalarType kv_dtype = at::kFloat;
  int64_t block_size = kDefaultBlockSize;
  int64_t step_tokens = 512;  // EngineOptions::max_step_tokens
  int64_t max_running = 64;
};

struct GreedyRun {
  std::vector<std::vector<int32_t>> tokens;   // per prompt, new_tokens each
  std::vector<std::string> texts;             // decoded
  CompressionStats compression;               // totals per sequence (no per-head detail)
  int64_t tokens_run = 0;                     // prefill and generated, for rates
  double seconds = 0;
};

GreedyRun run_greedy(const Model& model, const PolicyUnderTest& policy, const std::vector<std::vector<int32_t>>& prompts,
                     int64_t new_tokens, const EngineSettings& settings);

}  // namespace dms::eval
