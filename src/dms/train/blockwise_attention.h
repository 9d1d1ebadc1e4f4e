// The training attention of dms-spec section 4 computed block by block, as flash attention does:
// for each block of queries, an online softmax over the blocks of keys it may see (its documents,
// causality), the additive terms (the -inf of what a query may not see, the DMS penalty of keys
// more than `window` positions back) built per block, and in the backward the scores recomputed
// per block from the saved log-sum-exp instead of stored. Memory per layer is O(heads * T * block)
// rather than O(heads * T^2), and the blocks no query may see are never computed.
//
// Same result as TrainingAttention's dense path (tests/test_train_blockwise_attention.cpp), for
// the values and for the gradients of q, k, v and the penalty.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace dms {

// q [B, n_kv, G, T, D], k and v [B, n_kv, T, D], all in one float dtype (fp32 or fp64);
// penalty [B, n_kv, T]: what key j adds to the score of a query i of its document with
// i - j > window (log(1 - a_soft) of its decision), or undefined for none; documents [B, T]
// int64 ids (contiguous runs). Returns softmax(q k^T / sqrt(D) + masks) v, [B, n_kv, G, T, D],
// differentiable in q, k, v and penalty. `block` (>= 1) is the query and key block length.
at::Tensor blockwise_training_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const at::Tensor& penalty, const at::Tensor& documents, int64_t window,
                                        int64_t block);

}  // namespace dms
