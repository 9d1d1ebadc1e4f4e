// Facts about GGUF metadata value types shared by the reader and the typed getters.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "dms/format/gguf.h"

namespace dms {

bool gguf_value_type_known(uint32_t raw);
std::string gguf_value_type_name(GgufValueType t);   // "UINT32", or "type 42" for unknown values
// Fewest bytes one value of this type occupies in a file (bounds array counts before reading).
size_t gguf_value_min_bytes(GgufValueType t);
bool gguf_value_type_is_integer(GgufValueType t);
bool gguf_value_type_is_float(GgufValueType t);

}  // namespace dms
