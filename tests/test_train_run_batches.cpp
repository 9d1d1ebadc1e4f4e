// The batches of a retrofit step under data parallel: the processes' micro-batches together are
// the rows one process takes, and each knows where its rows sit among the step's (the index the
// decision noise is keyed by), so a step does not depend on how it is split.
#include <gtest/gtest.h>

#include <random>

#include "dms/train/run_batches.h"

namespace dms::test {
namespace {

TrainingData small_data() {
  std::mt19937_64 rng(4);
  std::uniform_int_distribution<int64_t> length(3, 30);
  std::uniform_int_distribution<int32_t> token(1, 999);
  std::vector<Document> docs(40);
  for (size_t i = 0; i < docs.size(); ++i) {
    docs[i].origin = "doc-" + std::to_string(i);
    docs[i].split_key = "key-" + std::to_string(i);
    docs[i].tokens.resize(static_cast<size_t>(length(rng)));
    for (auto& t : docs[i].tokens) t = token(rng);
  }
  DataOptions o;
  o.seq_len = 16;
  o.seed = 2;
  o.heldout_fraction = 0.2;
  return TrainingData(docs, {}, o);
}

TEST(RunBatches, ProcessesSplitAStepAsOneProcessTakesIt) {
  const int64_t rows = 2, accumulation = 3, world = 2, T = 16;  // TrainBatch tensors are [rows * T]
  TrainingData one = small_data();
  const std::vector<TrainBatch> whole = next_step_batches(one, rows * world, accumulation, 0, 1);
  ASSERT_EQ(whole.size(), 3u);
  for (int64_t rank = 0; rank < world; ++rank) {
    TrainingData data = small_data();
    const std::vector<TrainBatch> mine = next_step_batches(data, rows, accumulation, rank, world);
    ASSERT_EQ(mine.size(), 3u);
    for (int64_t m = 0; m < accumulation; ++m) {
      const TrainBatch& b = mine[static_cast<size_t>(m)];
      EXPECT_EQ(b.first_sequence, (m * world + rank) * rows) << "rank " << rank << ", micro-batch " << m;
      EXPECT_TRUE(at::equal(b.tokens, whole[static_cast<size_t>(m)].tokens.narrow(0, rank * rows * T, rows * T)))
          << "rank " << rank << ", micro-batch " << m;
      EXPECT_TRUE(at::equal(b.documents, whole[static_cast<size_t>(m)].documents.narrow(0, rank * rows * T, rows * T)));
    }
    EXPECT_EQ(data.cursor().row, one.cursor().row) << "every process moves past the whole step";
  }
}

TEST(RunBatches, HeldOutBatchesHoldTheRowsAskedFor) {
  const TrainingData data = small_data();
  const int64_t available = static_cast<int64_t>(data.heldout_batches(1).size());
  ASSERT_GE(available, 5) << "the fixture's held-out split shrank";
  EXPECT_EQ(heldout_train_batches(data, 2, 5).size(), 3u);  // 2 + 2 + 2 rows hold 5
  EXPECT_EQ(heldout_train_batches(data, 2, 4).size(), 2u);
  EXPECT_EQ(static_cast<int64_t>(heldout_train_batches(data, 1, 1000).size()), available);
}

}  // namespace
}  // namespace dms::test
