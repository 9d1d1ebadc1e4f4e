// ggml block dequantization on raw bytes: the first byte picks the type, the rest are its
// blocks (whole blocks only, at most 64).
#include "dms/format/ggml_types.h"
#include "fuzz_common.h"

using namespace dms;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || !ggml_type_known(data[0])) return 0;
  const auto type = static_cast<GgmlType>(data[0]);
  if (!ggml_type_dequantizable(type)) return 0;
  const size_t block_bytes = ggml_block_bytes(type);
  const size_t blocks = std::min<size_t>((size - 1) / block_bytes, 64);
  if (blocks == 0) return 0;
  // An exactly sized copy, so that AddressSanitizer sees a read past the last block.
  std::vector<uint8_t> bytes(data + 1, data + 1 + blocks * block_bytes);
  std::vector<float> out(blocks * ggml_block_elems(type));
  dequantize_row(type, bytes.data(), out.data(), static_cast<int64_t>(out.size()));
  return 0;
}
