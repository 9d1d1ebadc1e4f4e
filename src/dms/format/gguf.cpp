// GGUF layout (all little-endian): "GGUF", u32 version, u64 tensor count, u64 metadata count;
// metadata as (string key, u32 value type, value); tensor infos as (string name, u32 n_dims,
// u64 ne[n_dims], u32 ggml type, u64 offset); padding to the alignment; the data section.
// A string is a u64 byte length and the bytes; an array is a u32 element type, a u64 count
// and the elements (which may themselves be arrays).
#include "dms/format/gguf.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "dms/format/gguf_value_type.h"
#include "dms/format/little_endian.h"
#include "dms/util/error.h"

namespace dms {
namespace {

constexpr int kMaxDims = 4;          // GGML_MAX_DIMS
constexpr int kMaxArrayNesting = 16;

// Reads fields in order, failing with the file path and `what` instead of running past the end.
class Cursor {
 public:
  explicit Cursor(const MappedFile& f) : f_(f) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return f_.size() - pos_; }

  const uint8_t* take(size_t n, const std::string& what) {
    if (n > remaining()) {
      fail(f_.path(), "truncated: " + what + " needs " + std::to_string(n) + " bytes at offset " +
                          std::to_string(pos_) + " but the file has " + std::to_string(f_.size()));
    }
    const uint8_t* p = f_.data() + pos_;
    pos_ += n;
    return p;
  }
  uint8_t u8(const std::string& what) { return *take(1, what); }
  uint16_t u16(const std::string& what) { return load_u16(take(2, what)); }
  uint32_t u32(const std::string& what) { return load_u32(take(4, what)); }
  uint64_t u64(const std::string& what) { return load_u64(take(8, what)); }

  std::string string(const std::string& what) {
    const uint64_t len = u64(what + " length");
    if (len > remaining()) {
      fail(f_.path(), what + " has length " + std::to_string(len) + " but only " + std::to_string(remaining()) +
                          " bytes remain in the file");
    }
    const uint8_t* p = take(static_cast<size_t>(len), what);
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(len));
  }

 private:
  const MappedFile& f_;
  size_t pos_ = 0;
};

GgufValue read_value(Cursor& c, const std::string& path, GgufValueType type, const std::string& what, int depth);

GgufValue read_array(Cursor& c, const std::string& path, const std::string& what, int depth) {
  if (depth >= kMaxArrayNesting) {
    fail(path, what + ": arrays nested more than " + std::to_string(kMaxArrayNesting) + " levels deep");
  }
  const uint32_t raw_type = c.u32(what + " element type");
  if (!gguf_value_type_known(raw_type)) {
    fail(path, what + ": unknown array element type " + std::to_string(raw_type));
  }
  const auto elem_type = static_cast<GgufValueType>(raw_type);
  const uint64_t count = c.u64(what + " element count");
  if (count > c.remaining() / gguf_value_min_bytes(elem_type)) {
    fail(path, what + ": array of " + std::to_string(count) + " " + gguf_value_type_name(elem_type) +
                   " elements cannot fit in the " + std::to_string(c.remaining()) + " bytes that remain");
  }
  std::vector<GgufValue> elems;
  elems.reserve(static_cast<size_t>(count));
  for (uint64_t i = 0; i < count; ++i) {
    elems.push_back(read_value(c, path, elem_type, what, depth + 1));
  }
  GgufValue v{GgufValueType::ARRAY, std::move(elems)};
  v.array_type = elem_type;
  return v;
}

GgufValue read_value(Cursor& c, const std::string& path, GgufValueType type, const std::string& what, int depth) {
  auto integer = [&](int64_t x) { return GgufValue{type, x}; };
  switch (type) {
    case GgufValueType::UINT8: return integer(c.u8(what));
    case GgufValueType::INT8: return integer(static_cast<int8_t>(c.u8(what)));
    case GgufValueType::UINT16: return integer(c.u16(what));
    case GgufValueType::INT16: return integer(static_cast<int16_t>(c.u16(what)));
    case GgufValueType::UINT32: return integer(c.u32(what));
    case GgufValueType::INT32: return integer(static_cast<int32_t>(c.u32(what)));
    case GgufValueType::INT64: return integer(static_cast<int64_t>(c.u64(what)));
    case GgufValueType::UINT64: {
      const uint64_t x = c.u64(what);
      if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        fail(path, what + ": UINT64 value " + std::to_string(x) + " does not fit in int64");
      }
      return integer(static_cast<int64_t>(x));
    }
    case GgufValueType::FLOAT32: return GgufValue{type, static_cast<double>(std::bit_cast<float>(c.u32(what)))};
    case GgufValueType::FLOAT64: return GgufValue{type, std::bit_cast<double>(c.u64(what))};
    case GgufValueType::BOOL: {
      const uint8_t b = c.u8(what);
      if (b > 1) fail(path, what + ": BOOL byte " + std::to_string(b) + " is neither 0 nor 1");
      return GgufValue{type, b == 1};
    }
    case GgufValueType::STRING: return GgufValue{type, c.string(what)};
    case GgufValueType::ARRAY: return read_array(c, path, what, depth);
  }
  fail(path, what + ": unknown value type " + std::to_string(static_cast<uint32_t>(type)));
}

void read_header(Cursor& c, const std::string& path, uint32_t& version, uint64_t& n_tensors, uint64_t& n_kv) {
  if (c.remaining() == 0) fail(path, "empty file");
  const uint8_t* magic = c.take(4, "the GGUF magic");
  if (std::memcmp(magic, "GGUF", 4) != 0) fail(path, "bad magic: not a GGUF file");
  version = c.u32("the GGUF version");
  if (version == 1) fail(path, "GGUF version 1 is not supported (only versions 2 and 3)");
  if (version != 2 && version != 3) {
    const uint32_t swapped = __builtin_bswap32(version);
    if (swapped == 2 || swapped == 3) fail(path, "big-endian GGUF is not supported");
    fail(path, "unsupported GGUF version " + std::to_string(version) + " (only versions 2 and 3)");
  }
  n_tensors = c.u64("the tensor count");
  n_kv = c.u64("the metadata count");
  // Smallest possible entries: a metadata pair with an empty key and a one-byte value (13 bytes),
  // a tensor info with an empty name and no dimensions (24 bytes).
  if (n_kv > c.remaining() / 13) {
    fail(path, "metadata count " + std::to_string(n_kv) + " cannot fit in a file of " +
                   std::to_string(c.remaining() + c.pos()) + " bytes");
  }
  if (n_tensors > c.remaining() / 24) {
    fail(path, "tensor count " + std::to_string(n_tensors) + " cannot fit in a file of " +
                   std::to_string(c.remaining() + c.pos()) + " bytes");
  }
}

uint32_t read_alignment(const std::map<std::string, GgufValue>& metadata, const std::string& path) {
  const auto it = metadata.find("general.alignment");
  if (it == metadata.end()) return 32;
  if (!gguf_value_type_is_integer(it->second.type)) {
    fail(path, "general.alignment is " + gguf_value_type_name(it->second.type) + ", not an integer");
  }
  const int64_t a = std::get<int64_t>(it->second.value);
  if (a <= 0 || a > (int64_t{1} << 30) || !std::has_single_bit(static_cast<uint64_t>(a))) {
    fail(path, "general.alignment " + std::to_string(a) + " is not a power of two up to 2^30");
  }
  return static_cast<uint32_t>(a);
}

GgufTensorInfo read_tensor_info(Cursor& c, const std::string& path, uint64_t index, uint32_t alignment) {
  GgufTensorInfo t;
  t.name = c.string("tensor #" + std::to_string(index) + " name");
  const std::string what = "tensor '" + t.name + "'";
  const uint32_t n_dims = c.u32(what + " n_dims");
  if (n_dims > kMaxDims) {
    fail(path, what + " has " + std::to_string(n_dims) + " dimensions (at most " + std::to_string(kMaxDims) + ")");
  }
  t.numel = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t ne = c.u64(what + " ne[" + std::to_string(d) + "]");
    if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail(path, what + " has invalid dimension ne[" + std::to_string(d) + "] = " + std::to_string(ne));
    }
    t.ne.push_back(static_cast<int64_t>(ne));
    if (__builtin_mul_overflow(t.numel, t.ne.back(), &t.numel)) {
      fail(path, what + " has too many elements (the dimensions overflow int64)");
    }
  }
  t.shape.assign(t.ne.rbegin(), t.ne.rend());
  const uint32_t raw_type = c.u32(what + " type");
  if (!ggml_type_known(raw_type)) fail(path, what + " has unknown ggml type " + std::to_string(raw_type));
  t.type = static_cast<GgmlType>(raw_type);
  const int64_t block = ggml_block_elems(t.type);
  const int64_t row = t.ne.empty() ? 1 : t.ne[0];
  if (row % block != 0) {
    fail(path, what + " row length ne[0] = " + std::to_string(row) + " is not a multiple of the " +
                   ggml_type_name(t.type) + " block size " + std::to_string(block));
  }
  const uint64_t n_blocks = static_cast<uint64_t>(t.numel / block);
  if (__builtin_mul_overflow(n_blocks, ggml_block_bytes(t.type), &t.nbytes)) {
    fail(path, what + " byte size overflows");
  }
  t.offset = c.u64(what + " offset");
  if (t.offset % alignment != 0) {
    fail(path, what + " offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                   std::to_string(alignment));
  }
  return t;
}

// Places every tensor inside the file and rejects tensors whose bytes overlap.
void place_tensors(std::vector<GgufTensorInfo>& tensors, const MappedFile& f, size_t data_start) {
  const uint64_t avail = data_start <= f.size() ? f.size() - data_start : 0;
  for (GgufTensorInfo& t : tensors) {
    if (t.offset > avail || t.nbytes > avail - t.offset) {
      fail(f.path(), "tensor '" + t.name + "' data (offset " + std::to_string(t.offset) + ", " +
                         std::to_string(t.nbytes) + " bytes) extends past the end of the file (the data section has " +
                         std::to_string(avail) + " bytes)");
    }
    t.data = f.data() + data_start + t.offset;
  }
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& t : tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensorInfo& prev = *by_offset[i - 1];
    if (by_offset[i]->offset < prev.offset + prev.nbytes) {
      fail(f.path(), "tensor '" + by_offset[i]->name + "' overlaps the data of tensor '" + prev.name + "'");
    }
  }
}

}  // namespace

std::shared_ptr<GgufFile> GgufFile::open(const std::string& path) { return parse(MappedFile::open(path)); }

std::shared_ptr<GgufFile> GgufFile::parse(std::shared_ptr<MappedFile> file) {
  auto g = std::shared_ptr<GgufFile>(new GgufFile());
  g->file_ = std::move(file);
  const std::string& path = g->file_->path();
  Cursor c(*g->file_);
  uint64_t n_tensors = 0, n_kv = 0;
  read_header(c, path, g->version_, n_tensors, n_kv);

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.string("metadata key #" + std::to_string(i));
    const std::string what = "metadata '" + key + "'";
    const uint32_t raw_type = c.u32(what + " value type");
    if (!gguf_value_type_known(raw_type)) fail(path, what + " has unknown value type " + std::to_string(raw_type));
    GgufValue v = read_value(c, path, static_cast<GgufValueType>(raw_type), what, 0);
    if (!g->metadata_.emplace(key, std::move(v)).second) fail(path, "duplicate metadata key '" + key + "'");
  }
  g->alignment_ = read_alignment(g->metadata_, path);

  g->tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t = read_tensor_info(c, path, i, g->alignment_);
    if (!g->tensor_index_.emplace(t.name, g->tensors_.size()).second) {
      fail(path, "duplicate tensor name '" + t.name + "'");
    }
    g->tensors_.push_back(std::move(t));
  }
  // pos <= file size < 2^63 and alignment <= 2^30, so rounding up cannot overflow.
  const size_t data_start = (c.pos() + g->alignment_ - 1) / g->alignment_ * g->alignment_;
  place_tensors(g->tensors_, *g->file_, data_start);
  return g;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  const auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

void GgufFile::dequantize(const GgufTensorInfo& t, float* out) const {
  if (!ggml_type_dequantizable(t.type)) {
    fail(path(), "tensor '" + t.name + "' has ggml type " + ggml_type_name(t.type) + ", which cannot be dequantized");
  }
  dequantize_row(t.type, t.data, out, t.numel);
}

}  // namespace dms
