// GPT-2's reversible byte <-> printable code point mapping used by byte-level BPE vocabularies.
#pragma once
#include <string>
#include <string_view>

namespace dms::byte_level {

// Maps every byte of `bytes` to its code point, as UTF-8 ("hello world" -> "helloĠworld").
std::string encode(std::string_view bytes);
// Appends the bytes a vocabulary token stands for. Returns false (appending nothing) when the
// token holds a code point outside the mapping, as special tokens such as "<|im_end|>" may not.
bool decode(std::string_view token, std::string& out);

}  // namespace dms::byte_level
