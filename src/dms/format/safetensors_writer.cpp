// save_safetensors: header JSON padded with spaces to a multiple of 8 bytes so the data starts
// 8-byte aligned; written to a temporary file in the same directory, synced, then renamed over
// `path` so readers never see a partial file.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "dms/format/safetensors.h"
#include "dms/util/error.h"

namespace dms {
namespace {

using nlohmann::json;

std::string build_header(const std::string& path, const std::vector<StTensorOut>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const StTensorOut& t : tensors) {
    if (t.name == "__metadata__") fail(path, "'__metadata__' is reserved and cannot name a tensor");
    if (!names.insert(t.name).second) fail(path, "duplicate tensor name '" + t.name + "'");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0 || __builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) {
        fail(path, "tensor '" + t.name + "' has an invalid shape");
      }
    }
    if (numel * st_dtype_size(t.dtype) != t.bytes.size()) {
      fail(path, "tensor '" + t.name + "' has " + std::to_string(t.bytes.size()) + " bytes but its shape of " +
                     st_dtype_name(t.dtype) + " needs " + std::to_string(numel * st_dtype_size(t.dtype)));
    }
    header[t.name] = {{"dtype", st_dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(path, std::string("write failed: ") + std::strerror(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

void save_safetensors(const std::string& path, const std::vector<StTensorOut>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string header = build_header(path, tensors, metadata);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, "cannot create " + tmp + ": " + std::strerror(errno));
  try {
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
    write_all(fd, len, sizeof len, path);
    write_all(fd, header.data(), header.size(), path);
    for (const StTensorOut& t : tensors) write_all(fd, t.bytes.data(), t.bytes.size(), path);
    if (::fsync(fd) != 0) fail(path, std::string("fsync failed: ") + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    std::remove(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    std::remove(tmp.c_str());
    fail(path, std::string("close failed: ") + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    fail(path, std::string("cannot rename the temporary file into place: ") + std::strerror(e));
  }
}

}  // namespace dms
