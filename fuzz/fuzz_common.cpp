#include "fuzz_common.h"

#include <cstdio>

#include "dms/tokenizer/utf8.h"

namespace dms::fuzz {

void encode_and_decode(const Tokenizer& tokenizer, std::string_view text) {
  std::vector<int32_t> ids;
  try {
    ids = tokenizer.encode(text, tokenizer.add_bos_default());
  } catch (const Error&) {
    return;  // text that is not UTF-8
  }
  const std::string whole = tokenizer.decode(ids, true);
  StreamDecoder stream(tokenizer);
  std::string pieces;
  for (int32_t id : ids) {
    const std::string piece = stream.push(id);
    if (utf8::first_invalid(piece) != std::string::npos) {
      std::fprintf(stderr, "StreamDecoder emitted a piece that is not UTF-8 for token %d\n", id);
      std::abort();
    }
    pieces += piece;
  }
  pieces += stream.finish();
  if (pieces != whole) {
    std::fprintf(stderr, "StreamDecoder gave %zu bytes, Tokenizer::decode %zu\n", pieces.size(), whole.size());
    std::abort();
  }
}

}  // namespace dms::fuzz
