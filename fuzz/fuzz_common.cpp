#include "fuzz_common.h"

#include <cstdio>
#include <iostream>

#include "dms/tokenizer/utf8.h"

namespace dms::fuzz {

// The parsers' warnings (an unrecognised chat template, ...) go to std::cerr; thousands of inputs a
// second would fill the logs with them (9 MB in 20 s) and slow the run. Sanitizer reports and the
// message of an uncaught exception do not go through std::cerr, so they still reach the log.
const bool g_quiet_warnings = [] {
  std::cerr.setstate(std::ios::failbit);
  return true;
}();

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
