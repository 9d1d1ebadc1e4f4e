// A read-only memory-mapped file. Weights point into it, so it must outlive them.
// `copy_of` holds bytes from memory under a name instead, so the parsers run on them unchanged (the
// fuzz targets: an exactly sized heap buffer, so AddressSanitizer sees every byte read past the end).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace dms {

class MappedFile {
 public:
  // Throws Error naming `path` when it cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  static std::shared_ptr<MappedFile> copy_of(const std::string& name, const uint8_t* data, size_t size);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Tells the kernel the mapped pages wholly inside [p, p + n) are not needed now (they leave the
  // process's resident set; reading them again faults them back in from the file). No-op for a copy.
  void release(const uint8_t* p, size_t n) const;

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;  // munmap at the end, else delete[]
};

}  // namespace dms
