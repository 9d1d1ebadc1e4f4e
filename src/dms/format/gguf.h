// GGUF v3 reader: metadata, tensor directory and dequantization, over a memory-mapped file.
// Every structural fact (counts, lengths, offsets, sizes) is checked against the file size
// before use; a violation throws Error naming the file and what is wrong.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "dms/format/ggml_types.h"
#include "dms/util/mapped_file.h"

namespace dms {

enum class GgufValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

struct GgufValue {
  GgufValueType type;
  // Integers of every width are held as int64_t (UINT64 above INT64_MAX is rejected),
  // floats as double. ARRAY holds its elements and `array_type` their type.
  std::variant<int64_t, double, bool, std::string, std::vector<GgufValue>> value;
  GgufValueType array_type = GgufValueType::UINT8;
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type;
  std::vector<int64_t> ne;      // GGUF order: ne[0] is the fastest-varying dimension
  std::vector<int64_t> shape;   // row-major (PyTorch) order: ne reversed
  int64_t numel = 0;
  uint64_t offset = 0;          // relative to the start of the data section
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
};

class GgufFile {
 public:
  // Throws Error("<path>: ...") on any malformed or unsupported content.
  static std::shared_ptr<GgufFile> open(const std::string& path);
  // The same for bytes already in memory (errors name file->path()).
  static std::shared_ptr<GgufFile> parse(std::shared_ptr<MappedFile> file);

  const std::string& path() const { return file_->path(); }
  // MappedFile::release for a tensor's bytes (once copied elsewhere, e.g. packed).
  void release(const GgufTensorInfo& t) const { file_->release(t.data, t.nbytes); }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }

  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const GgufValue* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }

  // Typed getters: throw Error naming the file and key when missing or of the wrong type.
  // get_int accepts any integer type; get_float accepts float or integer types.
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<double> get_float_array(const std::string& key) const;
  // Optional forms: nullopt when missing; still throw when present with the wrong type.
  std::optional<std::string> opt_string(const std::string& key) const;
  std::optional<int64_t> opt_int(const std::string& key) const;
  std::optional<double> opt_float(const std::string& key) const;
  std::optional<bool> opt_bool(const std::string& key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;

  // Dequantizes a whole tensor into `out` (numel floats). Throws for unsupported types.
  void dequantize(const GgufTensorInfo& t, float* out) const;

 private:
  std::shared_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

}  // namespace dms
