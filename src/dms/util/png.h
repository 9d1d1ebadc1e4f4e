// Writes 8-bit RGB images as PNG files (for pictures people would rather look at than read).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dms {

struct RgbImage {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> pixels;  // row-major, 3 bytes per pixel

  RgbImage(int64_t w, int64_t h, uint32_t fill_rgb = 0xffffff);
  void set(int64_t x, int64_t y, uint32_t rgb);  // 0xRRGGBB; out-of-range pixels are ignored
  void fill_rect(int64_t x, int64_t y, int64_t w, int64_t h, uint32_t rgb);
};

// Writes atomically (temporary file + rename); throws Error naming `path` on failure.
void write_png(const std::string& path, const RgbImage& image);

}  // namespace dms
