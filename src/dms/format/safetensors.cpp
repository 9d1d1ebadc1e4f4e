// safetensors layout: u64 little-endian header length N, N bytes of JSON, then the data. The
// JSON maps tensor names to {dtype, shape, data_offsets: [begin, end)} relative to the data,
// plus an optional "__metadata__" object of string values.
#include "dms/format/safetensors.h"

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>

#include "dms/format/little_endian.h"
#include "dms/util/error.h"

namespace dms {
namespace {

using nlohmann::json;

// The same cap the reference implementation puts on the JSON header.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeInfo {
  StDtype dtype;
  const char* name;
  size_t size;
};

constexpr std::array<DtypeInfo, 10> kDtypes = {{
    {StDtype::F64, "F64", 8}, {StDtype::F32, "F32", 4}, {StDtype::F16, "F16", 2},
    {StDtype::BF16, "BF16", 2}, {StDtype::I64, "I64", 8}, {StDtype::I32, "I32", 4},
    {StDtype::I16, "I16", 2}, {StDtype::I8, "I8", 1}, {StDtype::U8, "U8", 1},
    {StDtype::BOOL, "BOOL", 1},
}};

const DtypeInfo& info(StDtype d) {
  for (const DtypeInfo& i : kDtypes) {
    if (i.dtype == d) return i;
  }
  fail("safetensors", "unknown dtype value " + std::to_string(static_cast<int>(d)));
}

// A non-negative JSON integer, or a failure naming what it was meant to be.
uint64_t as_count(const json& j, const std::string& path, const std::string& what) {
  // nlohmann stores every non-negative integer literal as unsigned.
  if (!j.is_number_unsigned()) fail(path, what + " must be a non-negative integer, got " + j.dump());
  return j.get<uint64_t>();
}

StTensor parse_tensor(const std::string& name, const json& j, const std::string& path, const uint8_t* data,
                      uint64_t data_size) {
  const std::string what = "tensor '" + name + "'";
  if (!j.is_object()) fail(path, what + " entry is not a JSON object");
  StTensor t;
  t.name = name;
  t.file = path;

  const auto dtype = j.find("dtype");
  if (dtype == j.end() || !dtype->is_string()) fail(path, what + " has no string 'dtype'");
  const std::string dtype_name = dtype->get<std::string>();
  const auto d = std::find_if(kDtypes.begin(), kDtypes.end(),
                              [&](const DtypeInfo& i) { return dtype_name == i.name; });
  if (d == kDtypes.end()) fail(path, what + " has unsupported dtype '" + dtype_name + "'");
  t.dtype = d->dtype;

  const auto shape = j.find("shape");
  if (shape == j.end() || !shape->is_array()) fail(path, what + " has no 'shape' array");
  uint64_t numel = 1;
  for (const json& dim : *shape) {
    const uint64_t n = as_count(dim, path, what + " shape dimension");
    if (n > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, n, &numel)) {
      fail(path, what + " shape " + shape->dump() + " has too many elements");
    }
    t.shape.push_back(static_cast<int64_t>(n));
  }
  uint64_t expected_bytes = 0;
  if (__builtin_mul_overflow(numel, d->size, &expected_bytes)) {
    fail(path, what + " shape " + shape->dump() + " has too many bytes");
  }

  const auto offsets = j.find("data_offsets");
  if (offsets == j.end() || !offsets->is_array() || offsets->size() != 2) {
    fail(path, what + " has no 'data_offsets' pair");
  }
  const uint64_t begin = as_count((*offsets)[0], path, what + " data_offsets[0]");
  const uint64_t end = as_count((*offsets)[1], path, what + " data_offsets[1]");
  if (begin > end) fail(path, what + " data_offsets " + offsets->dump() + " end before they begin");
  if (end > data_size) {
    fail(path, what + " data_offsets " + offsets->dump() + " extend past the end of the data (" +
                   std::to_string(data_size) + " bytes)");
  }
  if (end - begin != expected_bytes) {
    fail(path, what + " data_offsets " + offsets->dump() + " span " + std::to_string(end - begin) +
                   " bytes but shape " + shape->dump() + " of " + dtype_name + " needs " +
                   std::to_string(expected_bytes));
  }
  t.data = data + begin;
  t.nbytes = static_cast<size_t>(expected_bytes);
  return t;
}

void check_no_overlap(const std::map<std::string, StTensor>& tensors, const std::string& path) {
  std::vector<const StTensor*> order;
  for (const auto& [name, t] : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const StTensor* a, const StTensor* b) { return a->data < b->data; });
  for (size_t i = 1; i < order.size(); ++i) {
    const StTensor& prev = *order[i - 1];
    if (order[i]->data < prev.data + prev.nbytes) {
      fail(path, "tensor '" + order[i]->name + "' overlaps the data of tensor '" + prev.name + "'");
    }
  }
}

}  // namespace

std::string st_dtype_name(StDtype d) { return info(d).name; }
size_t st_dtype_size(StDtype d) { return info(d).size; }

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  return parse(MappedFile::open(path));
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::parse(std::shared_ptr<MappedFile> file) {
  auto s = std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
  s->file_ = std::move(file);
  const MappedFile& f = *s->file_;
  const std::string& path = f.path();
  if (f.size() < 8) {
    fail(path, "truncated: " + std::to_string(f.size()) + " bytes is too short for the 8-byte header length");
  }
  const uint64_t header_len = load_u64(f.data());
  if (header_len > f.size() - 8) {
    fail(path, "header length " + std::to_string(header_len) + " exceeds the " + std::to_string(f.size() - 8) +
                   " bytes after it");
  }
  if (header_len > kMaxHeaderBytes) {
    fail(path, "header length " + std::to_string(header_len) + " exceeds the limit of " +
                   std::to_string(kMaxHeaderBytes));
  }
  const char* header = reinterpret_cast<const char*>(f.data() + 8);
  json j;
  try {
    j = json::parse(header, header + header_len);
  } catch (const json::exception& e) {
    fail(path, std::string("invalid JSON header: ") + e.what());
  }
  if (!j.is_object()) fail(path, "JSON header is not an object");

  const uint8_t* data = f.data() + 8 + header_len;
  const uint64_t data_size = f.size() - 8 - header_len;
  for (const auto& [key, value] : j.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) fail(path, "__metadata__ is not a JSON object");
      for (const auto& [mkey, mvalue] : value.items()) {
        if (!mvalue.is_string()) fail(path, "__metadata__ value '" + mkey + "' is not a string");
        s->metadata_[mkey] = mvalue.get<std::string>();
      }
      continue;
    }
    s->tensors_[key] = parse_tensor(key, value, path, data, data_size);
  }
  check_no_overlap(s->tensors_, path);
  return s;
}

}  // namespace dms
