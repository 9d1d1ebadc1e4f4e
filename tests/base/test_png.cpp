// PNG writer: random images read back with libpng's own decoder are pixel-identical.
#include <gtest/gtest.h>
#include <png.h>

#include <filesystem>
#include <random>

#include "dms/util/error.h"
#include "dms/util/png.h"

namespace dms {
namespace {

std::vector<uint8_t> read_rgb(const std::string& path, int64_t* w, int64_t* h) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  EXPECT_TRUE(png_image_begin_read_from_file(&img, path.c_str())) << img.message;
  img.format = PNG_FORMAT_RGB;
  std::vector<uint8_t> out(PNG_IMAGE_SIZE(img));
  EXPECT_TRUE(png_image_finish_read(&img, nullptr, out.data(), 0, nullptr)) << img.message;
  *w = img.width;
  *h = img.height;
  return out;
}

TEST(Png, RandomImageRoundTrips) {
  std::mt19937 rng(9);
  const std::string path = (std::filesystem::temp_directory_path() / "dms_test_png.png").string();
  for (auto [w, h] : {std::pair<int64_t, int64_t>{1, 1}, {37, 5}, {300, 41}}) {
    RgbImage img(w, h);
    for (auto& p : img.pixels) p = static_cast<uint8_t>(rng());
    write_png(path, img);
    int64_t rw = 0, rh = 0;
    auto back = read_rgb(path, &rw, &rh);
    EXPECT_EQ(rw, w);
    EXPECT_EQ(rh, h);
    EXPECT_EQ(back, img.pixels);
  }
  std::filesystem::remove(path);
}

TEST(Png, SetAndFillClipToTheImage) {
  RgbImage img(4, 3, 0x000000);
  img.fill_rect(2, 1, 10, 10, 0x112233);
  img.set(-1, 0, 0xffffff);
  img.set(4, 0, 0xffffff);
  for (int64_t y = 0; y < 3; ++y)
    for (int64_t x = 0; x < 4; ++x) {
      const uint8_t* p = &img.pixels[(y * 4 + x) * 3];
      const bool inside = x >= 2 && y >= 1;
      EXPECT_EQ(p[0], inside ? 0x11 : 0);
      EXPECT_EQ(p[2], inside ? 0x33 : 0);
    }
}

TEST(Png, UnwritablePathIsAnErrorNamingIt) {
  const std::string path = "/nonexistent-dir/map.png";
  try {
    write_png(path, RgbImage(2, 2));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dms
