#include "dms/util/png.h"

#include <png.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "dms/util/error.h"

namespace dms {

RgbImage::RgbImage(int64_t w, int64_t h, uint32_t fill_rgb) : width(w), height(h) {
  if (w <= 0 || h <= 0) fail("image", "size must be positive (got " + std::to_string(w) + "x" + std::to_string(h) + ")");
  pixels.resize(static_cast<size_t>(w * h * 3));
  fill_rect(0, 0, w, h, fill_rgb);
}

void RgbImage::set(int64_t x, int64_t y, uint32_t rgb) {
  if (x < 0 || y < 0 || x >= width || y >= height) return;
  uint8_t* p = &pixels[static_cast<size_t>((y * width + x) * 3)];
  p[0] = static_cast<uint8_t>(rgb >> 16);
  p[1] = static_cast<uint8_t>(rgb >> 8);
  p[2] = static_cast<uint8_t>(rgb);
}

void RgbImage::fill_rect(int64_t x, int64_t y, int64_t w, int64_t h, uint32_t rgb) {
  for (int64_t j = y; j < y + h; ++j)
    for (int64_t i = x; i < x + w; ++i) set(i, j, rgb);
}

void write_png(const std::string& path, const RgbImage& image) {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail(path, std::string("cannot write: ") + std::strerror(errno));
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  // libpng reports errors by longjmp; nothing with a destructor lives in this frame past here.
  if (!png || !info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::fclose(f);
    std::remove(tmp.c_str());
    fail(path, "PNG encoding failed");
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, static_cast<png_uint_32>(image.width), static_cast<png_uint_32>(image.height), 8,
               PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int64_t y = 0; y < image.height; ++y)
    png_write_row(png, const_cast<png_bytep>(&image.pixels[static_cast<size_t>(y * image.width * 3)]));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  const bool closed = std::fclose(f) == 0;
  std::error_code ec;
  if (closed) std::filesystem::rename(tmp, path, ec);
  if (!closed || ec) {
    std::remove(tmp.c_str());
    fail(path, "cannot write: " + (ec ? ec.message() : std::string(std::strerror(errno))));
  }
}

}  // namespace dms
