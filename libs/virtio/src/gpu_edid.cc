// The EDID block virtio-gpu's GET_EDID returns (VESA E-EDID 1.4): a
// monitor named "kindling" whose preferred mode is the scanout's size.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

#include "virtio/gpu_2d.h"

namespace virtio {
namespace {

constexpr uint32_t kMaxEdidDimension = 4095;  // 12-bit fields
constexpr uint64_t kMaxPixelClock = 655350000;  // 16 bits of 10 kHz
// Reduced blanking, as CVT-RB uses for digital panels.
constexpr uint32_t kHFront = 48, kHSync = 32, kHBlank = 160;
constexpr uint32_t kVFront = 3, kVSync = 5, kVBlank = 30;

// Bytes 0-17 of a detailed timing descriptor (EDID 1.4, 3.10.2).
void DetailedTiming(uint8_t* d, uint32_t w, uint32_t h, uint32_t w_mm, uint32_t h_mm) {
  const uint64_t total = uint64_t{w + kHBlank} * (h + kVBlank);
  const uint64_t refresh = std::clamp<uint64_t>(kMaxPixelClock / total, 1, 60);
  const uint64_t clock = total * refresh / 10000;  // 10 kHz units
  d[0] = clock & 0xff;
  d[1] = clock >> 8;
  d[2] = w & 0xff;
  d[3] = kHBlank & 0xff;
  d[4] = ((w >> 8) << 4) | (kHBlank >> 8);
  d[5] = h & 0xff;
  d[6] = kVBlank & 0xff;
  d[7] = ((h >> 8) << 4) | (kVBlank >> 8);
  d[8] = kHFront;
  d[9] = kHSync;
  d[10] = (kVFront << 4) | kVSync;
  d[11] = 0;  // the high bits of the four above
  d[12] = w_mm & 0xff;
  d[13] = h_mm & 0xff;
  d[14] = ((w_mm >> 8) << 4) | (h_mm >> 8);
  d[15] = d[16] = 0;  // no border
  d[17] = 0x1e;       // digital separate sync, +hsync +vsync
}

// A display descriptor: tag, then 13 bytes of text or data.
void TextDescriptor(uint8_t* d, uint8_t tag, const char* text) {
  d[3] = tag;
  size_t n = std::strlen(text);
  std::memset(d + 5, ' ', 13);
  std::memcpy(d + 5, text, n);
  if (n < 13) d[5 + n] = '\n';
}

}  // namespace

std::array<uint8_t, 128> BuildEdid(uint32_t width, uint32_t height) {
  std::array<uint8_t, 128> e{};
  const uint32_t w = std::clamp<uint32_t>(width, 1, kMaxEdidDimension);
  const uint32_t h = std::clamp<uint32_t>(height, 1, kMaxEdidDimension);
  static constexpr uint8_t kHeader[8] = {0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00};
  std::memcpy(e.data(), kHeader, 8);
  // Manufacturer "KDL": three 5-bit letters (A = 1), big-endian.
  uint16_t mfg = ((('K' - '@') << 10) | (('D' - '@') << 5) | ('L' - '@'));
  e[8] = mfg >> 8;
  e[9] = mfg & 0xff;
  e[10] = 0x01;  // product code 1
  e[16] = 1;     // week 1
  e[17] = 2026 - 1990;
  e[18] = 1;     // EDID 1.4
  e[19] = 4;
  e[20] = 0xa5;  // digital input, 8 bits per colour, DisplayPort
  // Physical size at 96 dots per inch: pixels * 25.4 / 96 mm.
  const uint32_t w_mm = w * 254 / 960, h_mm = h * 254 / 960;
  e[21] = std::clamp<uint32_t>((w_mm + 5) / 10, 1, 255);  // cm
  e[22] = std::clamp<uint32_t>((h_mm + 5) / 10, 1, 255);
  e[23] = 120;   // gamma 2.2
  e[24] = 0x06;  // RGB colour, sRGB, preferred timing is native
  // sRGB chromaticity (red, green, blue, white points, 10-bit fixed point).
  static constexpr uint8_t kSrgb[10] = {0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54};
  std::memcpy(e.data() + 25, kSrgb, 10);
  for (int i = 38; i < 54; ++i) e[i] = 0x01;  // no standard timings
  DetailedTiming(e.data() + 54, w, h, w_mm, h_mm);
  TextDescriptor(e.data() + 72, 0xfc, "kindling");  // monitor name
  TextDescriptor(e.data() + 90, 0xfe, "virtio-gpu");  // unspecified text
  e[108 + 3] = 0x10;  // dummy descriptor
  uint8_t sum = 0;
  for (int i = 0; i < 127; ++i) sum += e[i];
  e[127] = static_cast<uint8_t>(-sum);
  return e;
}

}  // namespace virtio
