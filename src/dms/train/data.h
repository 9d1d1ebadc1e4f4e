// Training data for retrofitting: documents read and tokenized (data_documents.h), a stable
// held-out split for evaluation, and batches of fixed-length packed rows (data_packing.h) in a
// seeded order that a checkpoint can store and resume exactly.
//
//   DataOptions o;
//   o.paths = {"corpus.jsonl"};
//   o.heldout_fraction = 0.05;          // or o.heldout_paths = {"heldout.jsonl"}
//   o.seq_len = 512;
//   o.seed = 1;
//   TrainingData data = TrainingData::load(o, *model.tokenizer, model.chat_template);
//   std::fprintf(stderr, "%s\n", data.describe().c_str());
//   Batch b = data.next_batch(rows_per_rank, rank, world);  // tokens, positions, segments, loss_mask
//   checkpoint["data"] = data.cursor().to_json();
//   ...
//   data.restore(DataCursor::from_json(checkpoint["data"], "checkpoint.json"));  // on --resume
//   for (const Batch& e : data.heldout_batches(8)) evaluate(e);
//
// Order: epoch e visits every training document once, in a permutation drawn from (seed, e), and
// packs them afresh, so each epoch has rows_per_epoch() = ceil(training tokens / T) rows and only
// its last row is padded. A batch that runs past the end of an epoch continues into the next.
// The permutation is computed here (splitmix64 and Fisher-Yates), not by the standard library, so
// a cursor resumes to the same rows on any machine.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dms/train/data_documents.h"
#include "dms/train/data_packing.h"

namespace dms {

struct DataOptions {
  std::vector<std::string> paths;          // training data, in the formats of data_documents.h
  std::vector<std::string> heldout_paths;  // evaluation data kept apart; when empty, the held-out
  double heldout_fraction = 0.0;           // share of `paths` (by in_heldout_split) is used instead
  int64_t seq_len = 1024;                  // T, tokens per row
  uint64_t seed = 0;                       // the document order of every epoch
};

// One batch of rows, each tensor [rows, T] on the CPU; see data_packing.h for what each holds.
struct Batch {
  at::Tensor tokens;     // int64
  at::Tensor positions;  // int64
  at::Tensor segments;   // int64, -1 on padding
  at::Tensor loss_mask;  // bool
  int64_t rows() const { return tokens.size(0); }
  int64_t real_tokens() const;  // positions that are not padding
  int64_t loss_tokens() const;  // positions where loss_mask is set
};

// Where the next batch starts, plus what the position refers to: restoring it on other data, another
// sequence length or another seed is refused rather than silently drawing different rows.
struct DataCursor {
  int64_t epoch = 0;
  int64_t row = 0;  // the next row of the epoch
  int64_t seq_len = 0;
  uint64_t seed = 0;
  int64_t documents = 0;      // training documents
  int64_t tokens = 0;         // training tokens
  uint64_t content_hash = 0;  // of the training documents' tokens, in file order

  nlohmann::json to_json() const;
  // Throws Error naming `where` and the field for a missing or mistyped field.
  static DataCursor from_json(const nlohmann::json& j, const std::string& where);
};

class TrainingData {
 public:
  // Reads and tokenizes options.paths (and options.heldout_paths). Throws Error for anything
  // read_documents refuses, a held-out fraction outside [0, 1) or given together with held-out
  // paths, a fraction that selects no document, and training data shorter than one row (saying
  // how many tokens there are and how many one row needs).
  static TrainingData load(const DataOptions& options, const Tokenizer& tokenizer, const ChatTemplate& chat_template);
  // The same from documents already read: `documents` is split by options.heldout_fraction;
  // `heldout` is used as the held-out set as it is.
  TrainingData(std::vector<Document> documents, std::vector<Document> heldout, const DataOptions& options);

  const std::vector<Document>& train_documents() const { return train_; }
  const std::vector<Document>& heldout_documents() const { return heldout_; }
  int64_t train_tokens() const { return train_tokens_; }
  int64_t heldout_tokens() const;
  int64_t seq_len() const { return options_.seq_len; }
  int64_t rows_per_epoch() const { return rows_per_epoch_; }
  // "train: 120 documents, 61,440 tokens, 120 rows of 512 per epoch | held out: 6 documents, ..."
  std::string describe() const;

  // Indices into train_documents() in the order epoch `epoch` visits them.
  std::vector<size_t> epoch_order(int64_t epoch) const;

  // The next rows * world rows from the cursor, which moves past all of them; returns the share
  // of `rank` (rows rank * rows to (rank + 1) * rows - 1), so `world` processes that each ask
  // for `rows` together see what one process asking for rows * world would.
  Batch next_batch(int64_t rows, int64_t rank = 0, int64_t world = 1);
  DataCursor cursor() const;
  // Throws Error naming what differs when `c` was taken on other data or settings, or points
  // outside an epoch.
  void restore(const DataCursor& c);

  // Every held-out row (held-out documents packed in file order), `rows` per batch, the last
  // batch possibly smaller; empty when nothing is held out.
  std::vector<Batch> heldout_batches(int64_t rows) const;

 private:
  const PackedRows& packed_epoch(int64_t epoch);

  DataOptions options_;
  std::vector<Document> train_, heldout_;
  int64_t train_tokens_ = 0;
  int64_t rows_per_epoch_ = 0;
  uint64_t content_hash_ = 0;
  int64_t epoch_ = 0, row_ = 0;
  int64_t packed_for_ = -1;  // the epoch `packed_` holds
  PackedRows packed_;
};

}  // namespace dms
