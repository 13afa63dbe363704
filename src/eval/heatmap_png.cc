// A dependency-free PNG writer for the NIAH heatmap (PNG spec, RFC 2083): RGB8, no interlace, the
// image data in zlib "stored" (uncompressed) deflate blocks, so only CRC-32 and Adler-32 are needed.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/output_file.h"
#include "eval/model_eval.h"

namespace attnkit::eval {
namespace {

uint32_t crc32(const uint8_t* p, size_t n, uint32_t crc = 0) {
  static uint32_t table[256];
  static bool init = false;
  if (!init) {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    init = true;
  }
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void put_u32(std::vector<uint8_t>* v, uint32_t x) {
  v->push_back(static_cast<uint8_t>(x >> 24));
  v->push_back(static_cast<uint8_t>(x >> 16));
  v->push_back(static_cast<uint8_t>(x >> 8));
  v->push_back(static_cast<uint8_t>(x));
}

void chunk(std::vector<uint8_t>* out, const char* type, const std::vector<uint8_t>& data) {
  put_u32(out, static_cast<uint32_t>(data.size()));
  std::vector<uint8_t> td(type, type + 4);
  td.insert(td.end(), data.begin(), data.end());
  out->insert(out->end(), td.begin(), td.end());
  put_u32(out, crc32(td.data(), td.size()));
}

// Red (0) -> yellow (0.5) -> green (1).
void colour(double v, uint8_t rgb[3]) {
  if (!std::isfinite(v)) {
    rgb[0] = rgb[1] = rgb[2] = 160;
    return;
  }
  v = std::fmin(1.0, std::fmax(0.0, v));
  const double r = v < 0.5 ? 1.0 : 2.0 * (1.0 - v);
  const double g = v < 0.5 ? 2.0 * v : 1.0;
  rgb[0] = static_cast<uint8_t>(std::lround(40 + 200 * r));
  rgb[1] = static_cast<uint8_t>(std::lround(40 + 180 * g));
  rgb[2] = 60;
}

}  // namespace

Status write_heatmap_png(const std::string& path, const std::vector<std::vector<double>>& values, int cell_px) {
  if (values.empty() || values[0].empty()) return Status::invalid_argument("write_heatmap_png: values is empty");
  if (cell_px < 2 || cell_px > 400) return Status::invalid_argument("write_heatmap_png: cell_px " + std::to_string(cell_px) + " must be in [2, 400]");
  const size_t rows = values.size(), cols = values[0].size();
  for (size_t r = 0; r < rows; ++r)
    if (values[r].size() != cols)
      return Status::invalid_argument("write_heatmap_png: row " + std::to_string(r) + " has " + std::to_string(values[r].size()) +
                                      " values, expected " + std::to_string(cols));
  const int bar = 16, gap = 10;
  const uint32_t w = static_cast<uint32_t>(cols * static_cast<size_t>(cell_px) + gap + bar);
  const uint32_t h = static_cast<uint32_t>(rows * static_cast<size_t>(cell_px));
  std::vector<uint8_t> raw;  // filter byte + RGB per row
  raw.reserve(static_cast<size_t>(h) * (1 + 3 * w));
  for (uint32_t y = 0; y < h; ++y) {
    raw.push_back(0);
    for (uint32_t x = 0; x < w; ++x) {
      uint8_t rgb[3] = {255, 255, 255};
      const uint32_t grid_w = static_cast<uint32_t>(cols * static_cast<size_t>(cell_px));
      if (x < grid_w) {
        const bool edge = x % static_cast<uint32_t>(cell_px) == 0 || y % static_cast<uint32_t>(cell_px) == 0;
        if (edge) {
          rgb[0] = rgb[1] = rgb[2] = 255;
        } else {
          colour(values[y / static_cast<uint32_t>(cell_px)][x / static_cast<uint32_t>(cell_px)], rgb);
        }
      } else if (x >= grid_w + static_cast<uint32_t>(gap)) {
        colour(1.0 - static_cast<double>(y) / std::max<double>(1.0, h - 1.0), rgb);  // colour bar: 1 at the top
      }
      raw.insert(raw.end(), rgb, rgb + 3);
    }
  }
  // zlib stream: header 0x78 0x01, stored blocks of <= 65535 bytes, Adler-32 of the raw data.
  std::vector<uint8_t> z = {0x78, 0x01};
  for (size_t off = 0; off < raw.size() || off == 0; ) {
    const size_t n = std::min<size_t>(65535, raw.size() - off);
    const bool last = off + n >= raw.size();
    z.push_back(last ? 1 : 0);
    z.push_back(static_cast<uint8_t>(n & 0xff));
    z.push_back(static_cast<uint8_t>(n >> 8));
    z.push_back(static_cast<uint8_t>(~n & 0xff));
    z.push_back(static_cast<uint8_t>((~n >> 8) & 0xff));
    z.insert(z.end(), raw.begin() + static_cast<std::ptrdiff_t>(off), raw.begin() + static_cast<std::ptrdiff_t>(off + n));
    off += n;
    if (last) break;
  }
  uint32_t a = 1, b = 0;
  for (uint8_t c : raw) {
    a = (a + c) % 65521;
    b = (b + a) % 65521;
  }
  put_u32(&z, (b << 16) | a);
  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<uint8_t> ihdr;
  put_u32(&ihdr, w);
  put_u32(&ihdr, h);
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // 8-bit, RGB, deflate, adaptive filter, no interlace
  chunk(&png, "IHDR", ihdr);
  chunk(&png, "IDAT", z);
  chunk(&png, "IEND", {});
  return write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(png.data()), png.size()),
                           "write_heatmap_png");
}

}  // namespace attnkit::eval
