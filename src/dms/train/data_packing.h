// Packing documents into rows of a fixed length T for training.
//
// The documents are laid end to end in the order given and the stream is cut every T tokens, so
// every token appears exactly once, in order, and only the last row is padded. Within a row, a
// segment is a run of one document: a document that crosses a row boundary continues as the
// first segment of the next row. Per position:
//   tokens     the token id; padding holds kPadToken
//   positions  0, 1, 2, ... restarting at every segment (rotary attention depends only on the
//              distance between positions, so a continued document loses nothing by restarting);
//              padding holds 0
//   segments   0, 1, 2, ... per row, the segment the token belongs to; padding holds -1.
//              Attention must stay inside a segment: query i may see key j only if j <= i and
//              segments[j] == segments[i] >= 0.
//   loss_mask  1 where the next position is in the same row and segment: the prediction made at
//              position i is trained only when token i + 1 continues the same document here,
//              so no loss predicts a document's first token from the one before, none falls on
//              a segment's last token or on padding.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace dms {

inline constexpr int32_t kPadToken = 0;

struct PackedRows {
  int64_t seq_len = 0;  // T
  int64_t rows = 0;
  // Each [rows * T], row-major.
  std::vector<int32_t> tokens, positions, segments;
  std::vector<uint8_t> loss_mask;
};

// Packs `documents` (each non-empty) in the given order into ceil(total / T) rows.
// Throws Error when T < 2 (no position could carry a loss) or a document is empty.
PackedRows pack_documents(std::span<const std::span<const int32_t>> documents, int64_t seq_len);

}  // namespace dms
