#include "kv_map.h"

#include <algorithm>

#include "bitmap_font.h"
#include "dms/util/error.h"
#include "dms/util/png.h"

namespace dms::cli {
namespace {

constexpr uint32_t kKept = 0x1f4e99, kEvicted = 0xebe5d8, kInk = 0x222222, kPrompt = 0xd62728, kWhite = 0xffffff;

uint32_t blend(uint32_t a, uint32_t b, double t) {  // t = 0: a, t = 1: b
  uint32_t out = 0;
  for (int shift : {16, 8, 0}) {
    const double ca = (a >> shift) & 0xff, cb = (b >> shift) & 0xff;
    out |= static_cast<uint32_t>(ca + (cb - ca) * t + 0.5) << shift;
  }
  return out;
}

}  // namespace

void write_kv_map(const std::string& path, const KvMapInput& in) {
  if (in.tokens <= 0 || in.layers <= 0 || in.kv_heads <= 0 ||
      static_cast<int64_t>(in.kept.size()) != in.layers * in.kv_heads)
    fail(path, "nothing to draw (no tokens or no per-head record)");
  const int64_t rows = in.layers * in.kv_heads;
  const int64_t row_h = std::clamp<int64_t>(360 / rows, 1, 8);
  const int64_t gap = 1;  // between layers
  const int64_t plot_w = std::clamp<int64_t>(in.tokens, 400, 1200);
  const int64_t left = 48, top = 24, plot_h = rows * row_h + (in.layers - 1) * gap;
  RgbImage img(left + plot_w + 16, top + plot_h + 40, kWhite);
  draw_text(img, left, 8, in.title, kInk);

  for (int64_t l = 0; l < in.layers; ++l) {
    for (int64_t g = 0; g < in.kv_heads; ++g) {
      std::vector<uint8_t> stored(static_cast<size_t>(in.tokens), 0);
      for (int32_t p : in.kept[static_cast<size_t>(l * in.kv_heads + g)])
        if (p >= 0 && p < in.tokens) stored[static_cast<size_t>(p)] = 1;
      const int64_t y = top + (l * in.kv_heads + g) * row_h + l * gap;
      for (int64_t x = 0; x < plot_w; ++x) {
        // The column's positions: several per column for long sequences, one (repeated over
        // neighbouring columns) for short ones. Shade by the share still stored.
        const int64_t p0 = x * in.tokens / plot_w, p1 = std::max(p0 + 1, (x + 1) * in.tokens / plot_w);
        int64_t kept = 0;
        for (int64_t p = p0; p < p1; ++p) kept += stored[static_cast<size_t>(p)];
        img.fill_rect(left + x, y, 1, row_h, blend(kEvicted, kKept, static_cast<double>(kept) / static_cast<double>(p1 - p0)));
      }
    }
    if (l % 5 == 0 || l == in.layers - 1)
      draw_text(img, 4, top + l * (in.kv_heads * row_h + gap), "L" + std::to_string(l), kInk);
  }
  const int64_t prompt_x = left + in.prompt_tokens * plot_w / in.tokens;
  if (in.prompt_tokens > 0 && in.prompt_tokens < in.tokens) img.fill_rect(prompt_x, top, 1, plot_h, kPrompt);

  const int64_t axis_y = top + plot_h + 6;
  draw_text(img, left, axis_y, "0", kInk);
  const std::string end = std::to_string(in.tokens) + " tokens";
  draw_text(img, left + plot_w - text_width(end), axis_y, end, kInk);
  const int64_t legend_y = axis_y + 14;
  img.fill_rect(left, legend_y, 10, 7, kKept);
  draw_text(img, left + 14, legend_y, "kept", kInk);
  img.fill_rect(left + 50, legend_y, 10, 7, kEvicted);
  draw_text(img, left + 64, legend_y, "evicted", kInk);
  img.fill_rect(left + 120, legend_y, 2, 7, kPrompt);
  draw_text(img, left + 126, legend_y, "end of prompt", kInk);
  write_png(path, img);
}

}  // namespace dms::cli
