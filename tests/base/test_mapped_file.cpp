// dms::MappedFile::release: the pages it is given leave the process's resident set (read off
// /proc/self/smaps for the mapping) and still read back the file's bytes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "dms/util/mapped_file.h"

namespace {

// The Rss of the mapping that starts at `start`, in KiB (-1 when there is none).
int64_t mapping_rss_kib(const void* start) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in = false;
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2) {
      in = lo == reinterpret_cast<uintptr_t>(start);
      continue;
    }
    if (in && line.rfind("Rss:", 0) == 0) return std::stoll(line.substr(4));
  }
  return -1;
}

TEST(MappedFile, ReleasedPagesLeaveTheResidentSetAndReadBack) {
  const std::string path = ::testing::TempDir() + "mapped_file_release.bin";
  std::vector<uint8_t> bytes(8 << 20);
  std::mt19937_64 rng(7);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());

  const auto file = dms::MappedFile::open(path);
  ASSERT_EQ(file->size(), bytes.size());
  uint64_t sum = 0;
  for (size_t i = 0; i < file->size(); i += 4096) sum += file->data()[i];  // touch every page
  EXPECT_GT(sum, 0u);
  const int64_t before = mapping_rss_kib(file->data());
  ASSERT_GE(before, 7 * 1024) << "the whole file should be resident after reading it";

  // Everything but the first and last 1 MiB (and an unaligned start: only whole pages go).
  file->release(file->data() + (1 << 20) + 1, bytes.size() - (2 << 20) - 1);
  const int64_t after = mapping_rss_kib(file->data());
  EXPECT_LE(after, before - 5 * 1024) << "before " << before << " KiB, after " << after << " KiB";

  EXPECT_EQ(0, std::memcmp(file->data(), bytes.data(), bytes.size()));  // faulted back in from the file
  file->release(file->data() + file->size() - 10, 100);                 // past the end: ignored
  file->release(bytes.data(), 4096);                                     // not in the mapping: ignored
  EXPECT_EQ(0, std::memcmp(file->data(), bytes.data(), bytes.size()));
  std::remove(path.c_str());
}

}  // namespace
