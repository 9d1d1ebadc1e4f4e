// One micro-batch of training data as the training forward reads it: B sequences of T tokens,
// flattened to B*T rows (the Transformer forward takes [N] tokens and positions). A sequence
// may pack several documents; rows of different documents never attend to each other, and
// positions restart at 0 at the start of each document.
//
//   auto batch = make_train_batch(tokens, documents, counted);   // each [B, T]
//   trainer.step(batch);
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace dms {

struct TrainBatch {
  int64_t batch = 0;    // B sequences
  int64_t seq_len = 0;  // T tokens each
  at::Tensor tokens;     // [B*T] int64
  at::Tensor positions;  // [B*T] int64, 0 at each document's first token
  at::Tensor documents;  // [B*T] int64 document id within its sequence; runs of one id are contiguous
  at::Tensor counted;    // [B*T] bool: the non-padding rows, the only ones the losses count
  // Index of the first of these sequences among all sequences of the optimizer step (across
  // gradient accumulation and processes): the decision noise of a sequence is keyed by it, so
  // a step gives the same noise however its sequences are split. -1: the trainer counts.
  int64_t first_sequence = -1;

  int64_t rows() const { return batch * seq_len; }
  int64_t counted_rows() const;
  // Throws Error naming `where` for inconsistent shapes, dtypes or ids, a token outside
  // [0, vocab_size), a document split into more than one run, or no counted row.
  void validate(int64_t vocab_size, const std::string& where) const;
  // The same batch with its tensors on `device`.
  TrainBatch to(const at::Device& device) const;
};

// Builds a batch from [B, T] tensors: tokens (int64), documents (int64 ids; padding rows may
// form a document of their own) and counted (bool); positions are derived from the documents.
TrainBatch make_train_batch(const at::Tensor& tokens, const at::Tensor& documents, const at::Tensor& counted);

}  // namespace dms
