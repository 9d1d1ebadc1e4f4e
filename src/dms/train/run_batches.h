// The batches a retrofit run trains and evaluates on, as the trainer takes them.
#pragma once
#include <cstdint>
#include <vector>

#include "dms/train/data.h"
#include "dms/train/train_batch.h"

namespace dms {

// A packed batch as the trainer takes it: documents are segments, padding is not counted.
TrainBatch to_train_batch(const Batch& batch);

// The micro-batches of one optimizer step for process `rank` of `world`: `accumulation` batches of
// `rows` rows, each this process's share of the next rows * world rows of `data`, with
// first_sequence = (micro * world + rank) * rows, the index of its first row among all the step's
// rows, so the decision noise a row gets does not depend on how the step is split.
std::vector<TrainBatch> next_step_batches(TrainingData& data, int64_t rows, int64_t accumulation, int64_t rank,
                                          int64_t world);

// The first held-out batches of `rows` rows, enough to hold `eval_rows` rows (fewer when the
// held-out set is smaller).
std::vector<TrainBatch> heldout_train_batches(const TrainingData& data, int64_t rows, int64_t eval_rows);

}  // namespace dms
