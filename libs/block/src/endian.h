// Big-endian loads and stores for on-disk metadata (internal).
#ifndef KINDLING_BLOCK_SRC_ENDIAN_H_
#define KINDLING_BLOCK_SRC_ENDIAN_H_

#include <cstdint>
#include <cstring>

namespace block::internal {

inline uint16_t LoadBe16(const void* p) {
  uint16_t v;
  memcpy(&v, p, 2);
  return __builtin_bswap16(v);
}
inline uint32_t LoadBe32(const void* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return __builtin_bswap32(v);
}
inline uint64_t LoadBe64(const void* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return __builtin_bswap64(v);
}
inline void StoreBe16(void* p, uint16_t v) {
  v = __builtin_bswap16(v);
  memcpy(p, &v, 2);
}
inline void StoreBe32(void* p, uint32_t v) {
  v = __builtin_bswap32(v);
  memcpy(p, &v, 4);
}
inline void StoreBe64(void* p, uint64_t v) {
  v = __builtin_bswap64(v);
  memcpy(p, &v, 8);
}

}  // namespace block::internal

#endif  // KINDLING_BLOCK_SRC_ENDIAN_H_
