#include "dms/train/run_batches.h"

namespace dms {

TrainBatch to_train_batch(const Batch& b) { return make_train_batch(b.tokens, b.segments, b.segments >= 0); }

std::vector<TrainBatch> next_step_batches(TrainingData& data, int64_t rows, int64_t accumulation, int64_t rank,
                                          int64_t world) {
  std::vector<TrainBatch> micro;
  for (int64_t m = 0; m < accumulation; ++m) {
    TrainBatch b = to_train_batch(data.next_batch(rows, rank, world));
    b.first_sequence = (m * world + rank) * rows;
    micro.push_back(std::move(b));
  }
  return micro;
}

std::vector<TrainBatch> heldout_train_batches(const TrainingData& data, int64_t rows, int64_t eval_rows) {
  std::vector<TrainBatch> out;
  for (const Batch& b : data.heldout_batches(rows)) {
    if (static_cast<int64_t>(out.size()) * rows >= eval_rows) break;
    out.push_back(to_train_batch(b));
  }
  return out;
}

}  // namespace dms
