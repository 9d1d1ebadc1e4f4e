// Packing documents into rows, against a plain re-derivation: every stream token is labelled with
// its document and offset first, and the rows' fields are then read off those labels.
#include <gtest/gtest.h>

#include <random>

#include "dms/train/data_packing.h"
#include "dms/util/error.h"

namespace dms {
namespace {

std::vector<std::vector<int32_t>> random_documents(std::mt19937_64& rng, int64_t seq_len) {
  std::uniform_int_distribution<int> count(1, 12);
  // Lengths from a single token to several rows, so documents start, end and cross rows anywhere.
  std::uniform_int_distribution<int64_t> length(1, 3 * seq_len + 1);
  std::uniform_int_distribution<int32_t> token(1, 50000);
  std::vector<std::vector<int32_t>> docs(static_cast<size_t>(count(rng)));
  for (auto& d : docs) {
    d.resize(static_cast<size_t>(length(rng)));
    for (auto& t : d) t = token(rng);
  }
  return docs;
}

struct Expected {
  std::vector<int32_t> tokens, positions, segments;
  std::vector<uint8_t> loss_mask;
};

Expected rederive(const std::vector<std::vector<int32_t>>& docs, int64_t T) {
  struct Label {
    int32_t token;
    int64_t doc, offset;
  };
  std::vector<Label> stream;
  for (size_t d = 0; d < docs.size(); ++d)
    for (size_t k = 0; k < docs[d].size(); ++k) stream.push_back({docs[d][k], static_cast<int64_t>(d), static_cast<int64_t>(k)});
  const int64_t rows = (static_cast<int64_t>(stream.size()) + T - 1) / T;
  Expected e;
  for (int64_t r = 0; r < rows; ++r) {
    int32_t segment = -1;
    int64_t segment_doc = -1, segment_first_offset = 0;
    for (int64_t t = 0; t < T; ++t) {
      const size_t i = static_cast<size_t>(r * T + t);
      if (i >= stream.size()) {
        e.tokens.push_back(kPadToken);
        e.positions.push_back(0);
        e.segments.push_back(-1);
        e.loss_mask.push_back(0);
        continue;
      }
      if (stream[i].doc != segment_doc) {
        ++segment;
        segment_doc = stream[i].doc;
        segment_first_offset = stream[i].offset;
      }
      e.tokens.push_back(stream[i].token);
      e.positions.push_back(static_cast<int32_t>(stream[i].offset - segment_first_offset));
      e.segments.push_back(segment);
      const bool next_here = t + 1 < T && i + 1 < stream.size() && stream[i + 1].doc == stream[i].doc;
      e.loss_mask.push_back(next_here);
    }
  }
  return e;
}

PackedRows pack(const std::vector<std::vector<int32_t>>& docs, int64_t T) {
  std::vector<std::span<const int32_t>> spans(docs.begin(), docs.end());
  return pack_documents(spans, T);
}

TEST(TrainDataPacking, RandomDocumentsMatchThePlainDerivation) {
  std::mt19937_64 rng(7);
  for (int64_t T : {2, 3, 7, 16, 64, 257}) {
    for (int trial = 0; trial < 25; ++trial) {
      const auto docs = random_documents(rng, T);
      const PackedRows p = pack(docs, T);
      const Expected e = rederive(docs, T);
      const std::string what = "T " + std::to_string(T) + " trial " + std::to_string(trial);
      int64_t total = 0;
      for (const auto& d : docs) total += static_cast<int64_t>(d.size());
      ASSERT_EQ(p.seq_len, T) << what;
      ASSERT_EQ(p.rows, (total + T - 1) / T) << what;
      ASSERT_EQ(p.tokens.size(), static_cast<size_t>(p.rows * T)) << what;
      EXPECT_EQ(p.tokens, e.tokens) << what;
      EXPECT_EQ(p.positions, e.positions) << what;
      EXPECT_EQ(p.segments, e.segments) << what;
      EXPECT_EQ(p.loss_mask, e.loss_mask) << what;

      // Every token once, in order, and padding only after the last of them.
      std::vector<int32_t> concatenated, real;
      for (const auto& d : docs) concatenated.insert(concatenated.end(), d.begin(), d.end());
      bool padding_seen = false;
      for (size_t i = 0; i < p.tokens.size(); ++i) {
        if (p.segments[i] < 0) {
          padding_seen = true;
          continue;
        }
        EXPECT_FALSE(padding_seen) << what << ": a token after padding at " << i;
        real.push_back(p.tokens[i]);
      }
      EXPECT_EQ(real, concatenated) << what;
    }
  }
}

TEST(TrainDataPacking, RefusesARowTooShortForAnyLossAndEmptyDocuments) {
  const std::vector<std::vector<int32_t>> one = {{1, 2, 3}};
  EXPECT_THROW(pack(one, 1), Error);
  const std::vector<std::vector<int32_t>> with_empty = {{1, 2}, {}, {3}};
  try {
    pack(with_empty, 4);
    FAIL() << "an empty document was packed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("document 1"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dms
