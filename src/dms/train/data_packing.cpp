#include "dms/train/data_packing.h"

#include <string>

#include "dms/util/error.h"

namespace dms {

PackedRows pack_documents(std::span<const std::span<const int32_t>> documents, int64_t seq_len) {
  if (seq_len < 2) fail("sequence length", "must be at least 2, got " + std::to_string(seq_len));
  int64_t total = 0;
  for (size_t d = 0; d < documents.size(); ++d) {
    if (documents[d].empty()) fail("document " + std::to_string(d), "is empty");
    total += static_cast<int64_t>(documents[d].size());
  }
  PackedRows out;
  out.seq_len = seq_len;
  out.rows = (total + seq_len - 1) / seq_len;
  const size_t n = static_cast<size_t>(out.rows * seq_len);
  out.tokens.assign(n, kPadToken);
  out.positions.assign(n, 0);
  out.segments.assign(n, -1);
  out.loss_mask.assign(n, 0);

  size_t at = 0;  // next position of the stream
  for (const auto& doc : documents) {
    size_t taken = 0;
    while (taken < doc.size()) {
      // One segment: as much of the document as fits in the current row.
      const size_t row_end = (at / static_cast<size_t>(seq_len) + 1) * static_cast<size_t>(seq_len);
      const size_t len = std::min(doc.size() - taken, row_end - at);
      const bool row_start = at % static_cast<size_t>(seq_len) == 0;
      const int32_t segment = row_start ? 0 : out.segments[at - 1] + 1;
      for (size_t k = 0; k < len; ++k) {
        out.tokens[at + k] = doc[taken + k];
        out.positions[at + k] = static_cast<int32_t>(k);
        out.segments[at + k] = segment;
        out.loss_mask[at + k] = k + 1 < len;
      }
      at += len;
      taken += len;
    }
  }
  return out;
}

}  // namespace dms
