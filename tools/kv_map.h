// A picture of what the KV cache kept: one row per (layer, KV head), one column per token
// position (or per bin of positions), dark where the key is still stored, pale where it was
// evicted; a red line marks where the prompt ends.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dms::cli {

struct KvMapInput {
  std::vector<std::vector<int32_t>> kept;  // [layer * kv_heads + head]: positions still stored
  int64_t layers = 0, kv_heads = 0;
  int64_t tokens = 0;         // positions 0 .. tokens-1 were seen
  int64_t prompt_tokens = 0;
  std::string title;
};

// Throws Error naming `path` when it cannot be written.
void write_kv_map(const std::string& path, const KvMapInput& in);

}  // namespace dms::cli
