// safetensors reader (single files and sharded Hugging Face checkpoints) and writer.
// Header, dtypes, shapes and offsets are validated against the file before any use.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dms/util/mapped_file.h"

namespace dms {

enum class StDtype { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

std::string st_dtype_name(StDtype d);   // "F32", "BF16", ...
size_t st_dtype_size(StDtype d);

struct StTensor {
  std::string name;
  StDtype dtype;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;   // into the mapped file
  size_t nbytes = 0;
  std::string file;                // the file it lives in (for error messages)
};

class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  // The same for bytes already in memory (errors name file->path()).
  static std::shared_ptr<SafetensorsFile> parse(std::shared_ptr<MappedFile> file);
  const std::string& path() const { return file_->path(); }
  const std::map<std::string, StTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::shared_ptr<MappedFile> file_;
  std::map<std::string, StTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a Hugging Face checkpoint directory: `model.safetensors`, or the shards
// named by `model.safetensors.index.json` (every indexed tensor must be in its shard).
class SafetensorsCheckpoint {
 public:
  static SafetensorsCheckpoint open_dir(const std::string& dir);
  // The sharded form from the index's text: `open_shard` gives the file of a shard name that the
  // index may use (a plain file name), or nullptr when there is no such shard.
  using ShardOpener = std::function<std::shared_ptr<SafetensorsFile>(const std::string& shard)>;
  static SafetensorsCheckpoint from_index(const std::string& index_text, const std::string& index_path,
                                          const ShardOpener& open_shard);
  const std::map<std::string, StTensor>& tensors() const { return tensors_; }
  const StTensor* find(const std::string& name) const;

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, StTensor> tensors_;
};

// Writes tensors (raw little-endian bytes) to `path` atomically (temp file + rename).
struct StTensorOut {
  std::string name;
  StDtype dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
void save_safetensors(const std::string& path, const std::vector<StTensorOut>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace dms
