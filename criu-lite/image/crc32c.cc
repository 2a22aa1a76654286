#include "image/crc32c.h"

#include <nmmintrin.h>

#include <array>
#include <cstring>

namespace ckpt::image {

// Both paths work on the inverted register; crc32c() does the pre- and
// post-inversion once, so chained calls compose like one call over the
// concatenated data. They are not static so the unit test can compare the two
// paths on the same machine (declared there, not in the header: nothing else
// should pick a path).
namespace detail {

namespace {

constexpr uint32_t kPoly = 0x82f63b78;  // Castagnoli polynomial, bit-reversed

constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[i] = c;
  }
  return t;
}

constexpr std::array<uint32_t, 256> kTable = make_table();

}  // namespace

// Only CPUs older than Nehalem (2008) get here, so a byte-at-a-time table is
// enough; the images it checks are read from disk anyway.
uint32_t crc32c_table(const uint8_t* p, size_t len, uint32_t state) {
  for (size_t i = 0; i < len; i++) state = kTable[(state ^ p[i]) & 0xff] ^ (state >> 8);
  return state;
}

__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(const uint8_t* p, size_t len,
                                                        uint32_t state) {
  uint64_t c = state;
  while (len >= 8) {
    uint64_t v;
    memcpy(&v, p, sizeof v);  // unaligned loads are cheap on every SSE4.2 CPU
    c = _mm_crc32_u64(c, v);
    p += 8;
    len -= 8;
  }
  auto c32 = static_cast<uint32_t>(c);
  while (len-- > 0) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}

bool crc32c_has_sse42() {
  static const bool has = [] {
    __builtin_cpu_init();  // harmless if already done; needed if called from a static ctor
    return __builtin_cpu_supports("sse4.2") != 0;
  }();
  return has;
}

}  // namespace detail

uint32_t crc32c(const void* data, size_t len, uint32_t crc) {
  auto* p = static_cast<const uint8_t*>(data);
  uint32_t state = ~crc;
  state = detail::crc32c_has_sse42() ? detail::crc32c_sse42(p, len, state)
                                     : detail::crc32c_table(p, len, state);
  return ~state;
}

}  // namespace ckpt::image
