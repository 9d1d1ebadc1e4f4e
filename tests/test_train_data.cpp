// TrainingData on random documents: an epoch is the documents packed in its seeded order, seeds
// and epochs give their own orders, ranks share one batch, a stored cursor resumes to the same
// batches, the held-out split is stable and disjoint, and bad settings are refused by name.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <numeric>
#include <random>
#include <set>

#include "dms/train/data.h"
#include "dms/util/error.h"
#include "test_train_data_util.h"

namespace dms::test {
namespace {

std::vector<Document> random_documents(std::mt19937_64& rng, int n, int64_t max_len) {
  std::uniform_int_distribution<int64_t> length(1, max_len);
  std::uniform_int_distribution<int32_t> token(1, 49151);
  std::vector<Document> docs(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    docs[i].origin = "doc-" + std::to_string(i);
    docs[i].split_key = "key-" + std::to_string(rng());
    docs[i].tokens.resize(static_cast<size_t>(length(rng)));
    for (auto& t : docs[i].tokens) t = token(rng);
  }
  return docs;
}

DataOptions options(int64_t seq_len, uint64_t seed, double heldout_fraction = 0) {
  DataOptions o;
  o.seq_len = seq_len;
  o.seed = seed;
  o.heldout_fraction = heldout_fraction;
  return o;
}

template <typename T>
std::vector<T> flat(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::vector<T>(c.data_ptr<T>(), c.data_ptr<T>() + c.numel());
}

// All four fields of a batch, flattened, for comparing sequences of batches.
struct Rows {
  std::vector<int64_t> tokens, positions, segments;
  std::vector<bool> loss_mask;
  void append(const Batch& b) {
    for (auto v : flat<int64_t>(b.tokens)) tokens.push_back(v);
    for (auto v : flat<int64_t>(b.positions)) positions.push_back(v);
    for (auto v : flat<int64_t>(b.segments)) segments.push_back(v);
    for (auto v : flat<bool>(b.loss_mask)) loss_mask.push_back(v);
  }
  bool operator==(const Rows&) const = default;
};

Rows draw(TrainingData& data, int64_t batches, int64_t rows) {
  Rows out;
  for (int64_t i = 0; i < batches; ++i) out.append(data.next_batch(rows));
  return out;
}

Rows from_packed(const PackedRows& p) {
  Rows r;
  r.tokens.assign(p.tokens.begin(), p.tokens.end());
  r.positions.assign(p.positions.begin(), p.positions.end());
  r.segments.assign(p.segments.begin(), p.segments.end());
  r.loss_mask.assign(p.loss_mask.begin(), p.loss_mask.end());
  return r;
}

TEST(TrainData, AnEpochIsEveryTrainingDocumentOnceInItsSeededOrder) {
  std::mt19937_64 rng(11);
  const int64_t T = 32;
  TrainingData data(random_documents(rng, 40, 90), {}, options(T, 5));
  const auto& docs = data.train_documents();
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::vector<size_t> order = data.epoch_order(epoch);
    std::vector<size_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    std::vector<size_t> all(docs.size());
    std::iota(all.begin(), all.end(), 0);
    ASSERT_EQ(sorted, all) << "epoch " << epoch << " is not a permutation of the documents";

    const Rows rows = draw(data, data.rows_per_epoch(), 1);
    std::vector<int64_t> expected_tokens;
    for (size_t i : order) expected_tokens.insert(expected_tokens.end(), docs[i].tokens.begin(), docs[i].tokens.end());
    std::vector<int64_t> real;
    for (size_t i = 0; i < rows.tokens.size(); ++i)
      if (rows.segments[i] >= 0) real.push_back(rows.tokens[i]);
    EXPECT_EQ(real, expected_tokens) << "epoch " << epoch;

    std::vector<std::span<const int32_t>> spans;
    for (size_t i : order) spans.emplace_back(docs[i].tokens);
    EXPECT_TRUE(rows == from_packed(pack_documents(spans, T))) << "epoch " << epoch << " rows are not its documents packed";
  }
}

TEST(TrainData, BatchCountsTheirRealAndLossTokens) {
  std::mt19937_64 rng(12);
  TrainingData data(random_documents(rng, 9, 50), {}, options(16, 1));
  for (int i = 0; i < 6; ++i) {
    const Batch b = data.next_batch(5);
    ASSERT_EQ(b.tokens.sizes(), (std::vector<int64_t>{5, 16}));
    int64_t real = 0, loss = 0;
    for (auto s : flat<int64_t>(b.segments)) real += s >= 0;
    for (bool m : flat<bool>(b.loss_mask)) loss += m;
    EXPECT_EQ(b.real_tokens(), real);
    EXPECT_EQ(b.loss_tokens(), loss);
  }
}

TEST(TrainData, ASeedGivesOneOrderAndAnotherSeedOrEpochAnother) {
  std::mt19937_64 rng(13);
  const auto docs = random_documents(rng, 30, 40);
  TrainingData a(docs, {}, options(24, 9)), b(docs, {}, options(24, 9)), c(docs, {}, options(24, 10));
  EXPECT_TRUE(draw(a, 3 * a.rows_per_epoch() / 4 + 5, 4) == draw(b, 3 * b.rows_per_epoch() / 4 + 5, 4));
  EXPECT_NE(a.epoch_order(0), c.epoch_order(0));
  EXPECT_NE(a.epoch_order(0), a.epoch_order(1));
  std::vector<size_t> identity(docs.size());
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_NE(a.epoch_order(0), identity) << "the first epoch is shuffled too";
}

TEST(TrainData, BatchesContinueAcrossEpochs) {
  std::mt19937_64 rng(14);
  const auto docs = random_documents(rng, 25, 60);
  TrainingData by_seven(docs, {}, options(16, 3)), by_one(docs, {}, options(16, 3));
  ASSERT_NE(by_seven.rows_per_epoch() % 7, 0) << "the test needs batches that straddle an epoch";
  const int64_t batches = 2 * by_seven.rows_per_epoch() / 7 + 2;
  EXPECT_TRUE(draw(by_seven, batches, 7) == draw(by_one, batches * 7, 1));
  EXPECT_GE(by_seven.cursor().epoch, 2);
}

TEST(TrainData, RanksTogetherSeeOneProcessesBatch) {
  std::mt19937_64 rng(15);
  const auto docs = random_documents(rng, 20, 70);
  const int64_t world = 3, rows = 2;
  TrainingData single(docs, {}, options(16, 4));
  std::vector<TrainingData> ranks;
  for (int64_t r = 0; r < world; ++r) ranks.emplace_back(docs, std::vector<Document>{}, options(16, 4));
  for (int step = 0; step < 12; ++step) {
    Rows joined, one;
    for (int64_t r = 0; r < world; ++r) joined.append(ranks[r].next_batch(rows, r, world));
    one.append(single.next_batch(rows * world));
    EXPECT_TRUE(joined == one) << "step " << step;
  }
  for (int64_t r = 0; r < world; ++r) EXPECT_EQ(ranks[r].cursor().row, single.cursor().row);
}

TEST(TrainData, ACursorResumesToTheSameRemainingBatches) {
  std::mt19937_64 rng(16);
  const auto docs = random_documents(rng, 35, 80);
  for (int64_t taken : {0, 3, 11, 40}) {
    TrainingData run(docs, {}, options(32, 21)), resumed(docs, {}, options(32, 21));
    draw(run, taken, 3);
    // Through JSON text, as a checkpoint file holds it.
    const std::string saved = run.cursor().to_json().dump();
    resumed.restore(DataCursor::from_json(nlohmann::json::parse(saved), "checkpoint.json"));
    EXPECT_EQ(resumed.cursor().epoch, run.cursor().epoch);
    EXPECT_TRUE(draw(run, 25, 3) == draw(resumed, 25, 3)) << "after " << taken << " batches";
  }
}

void expect_refused(TrainingData& data, const DataCursor& c, const std::string& mention) {
  try {
    data.restore(c);
    FAIL() << "a cursor was accepted; expected an error mentioning '" << mention << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(mention), std::string::npos) << e.what();
  }
}

TEST(TrainData, ACursorFromOtherDataOrSettingsIsRefused) {
  std::mt19937_64 rng(17);
  const auto docs = random_documents(rng, 12, 50);
  TrainingData run(docs, {}, options(16, 2));
  draw(run, 4, 2);
  const DataCursor c = run.cursor();

  TrainingData other_seed(docs, {}, options(16, 3));
  expect_refused(other_seed, c, "seed");
  TrainingData other_length(docs, {}, options(24, 2));
  expect_refused(other_length, c, "sequence length");
  auto edited = docs;
  edited[5].tokens[0] += 1;
  TrainingData other_content(edited, {}, options(16, 2));
  expect_refused(other_content, c, "content hash");
  auto fewer = docs;
  fewer.pop_back();
  TrainingData other_documents(fewer, {}, options(16, 2));
  expect_refused(other_documents, c, "training documents");
  DataCursor past = c;
  past.row = run.rows_per_epoch();
  expect_refused(run, past, "outside");

  nlohmann::json j = c.to_json();
  j.erase("row");
  EXPECT_THROW(DataCursor::from_json(j, "ckpt.json"), Error);
  j = c.to_json();
  j["seed"] = 5;
  try {
    DataCursor::from_json(j, "ckpt.json");
    FAIL() << "a numeric seed field was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ckpt.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'seed'"), std::string::npos) << e.what();
  }
}

std::set<std::string> origins(const std::vector<Document>& docs) {
  std::set<std::string> out;
  for (const auto& d : docs) out.insert(d.origin);
  return out;
}

TEST(TrainData, TheHeldOutSplitIsStableAndDisjoint) {
  std::mt19937_64 rng(18);
  const auto docs = random_documents(rng, 300, 20);
  const double f = 0.2;
  TrainingData data(docs, {}, options(16, 1, f));
  const auto train = origins(data.train_documents()), held = origins(data.heldout_documents());
  EXPECT_EQ(train.size() + held.size(), docs.size());
  for (const auto& d : docs) {
    EXPECT_NE(train.count(d.origin), held.count(d.origin)) << d.origin << " must be on exactly one side";
    EXPECT_EQ(held.count(d.origin) == 1, in_heldout_split(d.split_key, f)) << d.origin;
  }
  EXPECT_GT(held.size(), 30u);
  EXPECT_LT(held.size(), 90u);

  auto reversed = docs;
  std::reverse(reversed.begin(), reversed.end());
  TrainingData again(reversed, {}, options(64, 99, f));
  EXPECT_EQ(origins(again.heldout_documents()), held) << "the split depends on the documents alone";
  TrainingData larger(docs, {}, options(16, 1, 0.3));
  for (const auto& o : held) EXPECT_EQ(origins(larger.heldout_documents()).count(o), 1u) << o;

  // Held-out rows: the held-out documents in file order, 4 rows a batch.
  std::vector<int64_t> expected, real;
  for (const auto& d : data.heldout_documents()) expected.insert(expected.end(), d.tokens.begin(), d.tokens.end());
  const auto batches = data.heldout_batches(4);
  ASSERT_FALSE(batches.empty());
  for (size_t i = 0; i < batches.size(); ++i) {
    if (i + 1 < batches.size()) EXPECT_EQ(batches[i].rows(), 4);
    Rows r;
    r.append(batches[i]);
    for (size_t k = 0; k < r.tokens.size(); ++k)
      if (r.segments[k] >= 0) real.push_back(r.tokens[k]);
  }
  EXPECT_EQ(real, expected);
  int64_t epoch_tokens = 0;
  for (int64_t i = 0; i < data.rows_per_epoch(); ++i) epoch_tokens += data.next_batch(1).real_tokens();
  EXPECT_EQ(epoch_tokens, data.train_tokens()) << "an epoch holds the training tokens and nothing held out";
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& mentions) {
  try {
    f();
    FAIL() << "no error; expected one mentioning '" << mentions[0] << "'";
  } catch (const Error& e) {
    for (const auto& m : mentions) EXPECT_NE(std::string(e.what()).find(m), std::string::npos) << e.what();
  }
}

TEST(TrainData, BadSettingsAreRefusedByName) {
  std::mt19937_64 rng(19);
  auto docs = random_documents(rng, 3, 20);
  int64_t total = 0;
  for (const auto& d : docs) total += static_cast<int64_t>(d.tokens.size());
  const int64_t T = total + 1;
  expect_error([&] { (void)TrainingData(docs, {}, options(T, 0)); },
               {"holds " + std::to_string(total) + " tokens in 3 documents", "needs " + std::to_string(T) + " tokens"});
  expect_error([&] { (void)TrainingData(docs, {}, options(4, 0, 1.0)); }, {"held-out fraction", "[0, 1)"});
  expect_error([&] { (void)TrainingData(docs, {}, options(4, 0, -0.1)); }, {"held-out fraction"});
  expect_error([&] { (void)TrainingData(docs, {}, options(4, 0, 1e-12)); }, {"selects none of its 3 documents"});
  expect_error([&] { (void)TrainingData({}, {}, options(4, 0)); }, {"no documents"});
  expect_error([&] { (void)TrainingData(docs, {}, options(1, 0)); }, {"sequence length"});
  DataOptions both = options(4, 0, 0.5);
  both.heldout_paths = {"eval.jsonl"};
  expect_error([&] { (void)TrainingData(docs, {}, both); }, {"not both"});

  // Holding documents out can leave too little: the message says so.
  auto many = random_documents(rng, 200, 3);
  int64_t kept = 0;
  for (const auto& d : many)
    if (!in_heldout_split(d.split_key, 0.5)) kept += static_cast<int64_t>(d.tokens.size());
  expect_error([&] { (void)TrainingData(many, {}, options(kept + 1, 0, 0.5)); },
               {"holds " + std::to_string(kept) + " tokens", "after holding out"});
  TrainingData ok(docs, {}, options(4, 0));
  expect_error([&] { ok.next_batch(0); }, {"rows"});
  expect_error([&] { ok.next_batch(2, 3, 3); }, {"rank 3"});
}

TEST(TrainData, LoadsFilesWithHeldOutFilesKeptApart) {
  const TokenizerFixture& t = TokenizerFixture::get();
  TempDir dir;
  std::mt19937_64 rng(20);
  std::string train, eval;
  std::vector<std::string> eval_texts;
  for (int i = 0; i < 12; ++i) train += nlohmann::json{{"text", random_text(rng, 30)}}.dump() + "\n";
  for (int i = 0; i < 3; ++i) {
    eval_texts.push_back(random_text(rng, 10));
    eval += nlohmann::json{{"text", eval_texts.back()}}.dump() + "\n";
  }
  DataOptions o = options(32, 7);
  o.paths = {dir.write("train.jsonl", train)};
  o.heldout_paths = {dir.write("eval.jsonl", eval)};
  TrainingData data = TrainingData::load(o, *t.tokenizer, t.chat_template);
  EXPECT_EQ(data.train_documents().size(), 12u);
  ASSERT_EQ(data.heldout_documents().size(), 3u);
  for (size_t i = 0; i < eval_texts.size(); ++i)
    EXPECT_EQ(data.heldout_documents()[i].tokens, t.tokenizer->encode(eval_texts[i], t.tokenizer->add_bos_default()));
  EXPECT_NE(data.describe().find("train: 12 documents"), std::string::npos) << data.describe();
  EXPECT_NE(data.describe().find("held out: 3 documents"), std::string::npos) << data.describe();

  o.paths = {dir.write("short.jsonl", R"({"text": "too short"})" "\n")};
  o.heldout_paths.clear();
  expect_error([&] { TrainingData::load(o, *t.tokenizer, t.chat_template); }, {"short.jsonl", "one sequence needs 32 tokens"});
}

}  // namespace
}  // namespace dms::test
