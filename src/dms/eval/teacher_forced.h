// Teacher-forced quality: every policy reads the same documents token by token, and its
// next-token distribution at every position is compared with the dense model's.
//
// How the tokens are stepped (the point of the `chunk` option). DMS visibility is exact in
// chunks: a key flagged in a chunk stays visible to the window's later queries whatever the
// step split, so dense and dms run `window` tokens per step. The budget policies (streaming,
// h2o, tova) only evict when a step ends, so within a chunk every query would see every key of
// the chunk, more than the budget; by default ("exact") they step one token at a time, as in
// decoding, and meet their budget after every token. chunk = N steps every policy N tokens at a
// time instead: faster, and the budget policies are then approximate within each chunk.
//
// Several documents run as sequences of one cache step, and all policies stepped alike share
// one forward pass (CacheStack), so a pass costs about one forward per step, not per policy.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <vector>

#include "dms/cache/eviction_policy.h"
#include "dms/cache/paged_kv_cache.h"
#include "dms/eval/compression.h"
#include "dms/eval/documents.h"
#include "dms/eval/metrics.h"
#include "dms/model/transformer.h"

namespace dms::eval {

// A policy as make_policy builds it, under a label for reports ("h2o", "dms f=0.75").
struct PolicyUnderTest {
  std::string label;
  std::string policy;
  PolicyOptions options;
};

// Whether the policy is exact when a step holds many tokens (dense and dms).
bool exact_in_chunks(const std::string& policy);

struct TeacherForcedOptions {
  at::ScalarType kv_dtype = at::kFloat;            // the policies' caches
  at::ScalarType reference_kv_dtype = at::kFloat;  // the dense reference's (e.g. f32 against q8 policies)
  int64_t block_size = kDefaultBlockSize;
  int64_t chunk = 0;       // 0: exact (see above); N: every policy steps N tokens
  int64_t window = 256;    // exact: tokens per step of dense and dms, and per comparison
  int64_t batch = 8;       // documents per cache step
  int64_t score_rows = 256;  // rows of logits scored at a time (memory: rows x vocabulary)
  ContextBuckets buckets;
  // Called after each window with the document tokens done and the pass's total.
  std::function<void(int64_t done, int64_t total)> progress;
};

struct PolicyQuality {
  std::string label, policy;
  QualityStats quality;
  CompressionStats compression;  // each document at its end
};

struct TeacherForcedResult {
  QualityStats dense;  // the reference's own perplexity (KL 0, agreement 1 by definition)
  std::vector<PolicyQuality> policies;
  int64_t tokens = 0;  // predictions scored per policy
};

// Document d feeds its tokens 0 .. n_d - 2; the prediction at position i is scored against
// token i + 1. The dense reference is always run; `policies` may include dense too (a check).
TeacherForcedResult run_teacher_forced(const Transformer& model, const std::vector<Document>& docs,
                                       const std::vector<PolicyUnderTest>& policies, const TeacherForcedOptions& options);

}  // namespace dms::eval
