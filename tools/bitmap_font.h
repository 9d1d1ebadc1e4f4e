// A 5x7 pixel font (upper case, digits, a little punctuation) for labelling PNG pictures
// without a font library. Lower case is drawn as upper case; unknown characters as blanks.
#pragma once
#include <cstdint>
#include <string>

#include "dms/util/png.h"

namespace dms::cli {

constexpr int kGlyphWidth = 5, kGlyphHeight = 7, kGlyphAdvance = 6;

// Draws `text` with its top-left corner at (x, y), each font pixel `scale` pixels wide.
void draw_text(RgbImage& image, int64_t x, int64_t y, const std::string& text, uint32_t rgb, int scale = 1);
inline int64_t text_width(const std::string& text, int scale = 1) {
  return static_cast<int64_t>(text.size()) * kGlyphAdvance * scale;
}

}  // namespace dms::cli
