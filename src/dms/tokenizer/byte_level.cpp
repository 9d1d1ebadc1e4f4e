#include "dms/tokenizer/byte_level.h"

#include <array>
#include <cstdint>

#include "dms/tokenizer/utf8.h"

namespace dms::byte_level {

namespace {

struct Tables {
  std::array<char32_t, 256> to_cp{};
  std::array<int16_t, 324> to_byte{};  // every mapped code point is below 0x144

  Tables() {
    to_byte.fill(-1);
    // Printable Latin-1 bytes map to themselves; the rest move to 256.. in byte order.
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_cp[b] = printable ? static_cast<char32_t>(b) : next++;
      to_byte[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

std::string encode(std::string_view bytes) {
  const auto& t = tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) utf8::append(out, t.to_cp[b]);
  return out;
}

bool decode(std::string_view token, std::string& out) {
  const auto& t = tables();
  std::string bytes;
  bytes.reserve(token.size());
  bool ok = true;
  size_t pos = 0;
  while (pos < token.size()) {
    size_t len = utf8::valid_sequence_length(token, pos);
    if (len == 0) return false;
    char32_t cp = utf8::decode_at(token, pos, len);
    if (cp >= t.to_byte.size() || t.to_byte[cp] < 0) {
      ok = false;
      break;
    }
    bytes += static_cast<char>(t.to_byte[cp]);
    pos += len;
  }
  if (ok) out += bytes;
  return ok;
}

}  // namespace dms::byte_level
