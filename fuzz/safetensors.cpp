// safetensors: the input as one file (header JSON, dtypes, shapes, offsets; every tensor's bytes
// read); and, when it holds separator lines, as a sharded checkpoint: the index JSON, then the
// shards in the order the index first names them.
#include <map>

#include "dms/format/safetensors.h"
#include "fuzz_common.h"

using namespace dms;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::expect_ok_or_error([&] {
    const auto file = SafetensorsFile::parse(MappedFile::copy_of("fuzz.safetensors", data, size));
    for (const auto& [name, t] : file->tensors()) fuzz::g_sink = fuzz::touch_bytes(t.data, t.nbytes);
  });
  const auto parts = fuzz::split_parts(data, size);
  if (parts.size() < 2) return 0;
  size_t next = 1;
  fuzz::expect_ok_or_error([&] {
    const auto checkpoint = SafetensorsCheckpoint::from_index(parts[0], "model.safetensors.index.json",
                                      [&](const std::string& shard) -> std::shared_ptr<SafetensorsFile> {
                                        if (next >= parts.size()) return nullptr;
                                        const std::string& bytes = parts[next++];
                                        const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
                                        return SafetensorsFile::parse(MappedFile::copy_of(shard, p, bytes.size()));
                                      });
    for (const auto& [name, t] : checkpoint.tensors()) fuzz::g_sink = fuzz::touch_bytes(t.data, t.nbytes);
  });
  return 0;
}
