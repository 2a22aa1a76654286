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

namespace {

// The crc32 instruction has a latency of three cycles and a throughput of
// one, so one dependency chain runs at a third of its speed. Long buffers
// are cut into three blocks checksummed side by side and joined: the CRC
// register is linear, so the state after A||B is shift(state after A, |B|)
// XOR (state after B started from 0), where shift(s, n) is the state after
// n zero bytes. shift by kBlock bytes is a table lookup per byte of s.
constexpr size_t kBlock = 8192;

struct ShiftTable {
  uint32_t t[4][256];
};

__attribute__((target("sse4.2"))) ShiftTable make_shift_table() {
  uint32_t basis[32];
  for (int bit = 0; bit < 32; bit++) {
    uint64_t c = 1u << bit;
    for (size_t i = 0; i < kBlock / 8; i++) c = _mm_crc32_u64(c, 0);
    basis[bit] = static_cast<uint32_t>(c);
  }
  ShiftTable st{};
  for (int k = 0; k < 4; k++)
    for (uint32_t v = 0; v < 256; v++) {
      uint32_t x = 0;
      for (int j = 0; j < 8; j++)
        if (v & (1u << j)) x ^= basis[8 * k + j];
      st.t[k][v] = x;
    }
  return st;
}

inline uint32_t shift_block(const ShiftTable& st, uint32_t s) {
  return st.t[0][s & 0xff] ^ st.t[1][(s >> 8) & 0xff] ^ st.t[2][(s >> 16) & 0xff] ^
         st.t[3][s >> 24];
}

}  // namespace

__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(const uint8_t* p, size_t len,
                                                        uint32_t state) {
  uint64_t c = state;
  if (len >= 3 * kBlock) {
    static const ShiftTable st = make_shift_table();
    while (len >= 3 * kBlock) {
      uint64_t c1 = 0, c2 = 0;
      const uint8_t* b = p + kBlock;
      const uint8_t* d = p + 2 * kBlock;
      for (size_t i = 0; i < kBlock; i += 8) {
        uint64_t v0, v1, v2;
        memcpy(&v0, p + i, 8);
        memcpy(&v1, b + i, 8);
        memcpy(&v2, d + i, 8);
        c = _mm_crc32_u64(c, v0);
        c1 = _mm_crc32_u64(c1, v1);
        c2 = _mm_crc32_u64(c2, v2);
      }
      uint32_t joined = shift_block(st, static_cast<uint32_t>(c)) ^ static_cast<uint32_t>(c1);
      c = shift_block(st, joined) ^ static_cast<uint32_t>(c2);
      p += 3 * kBlock;
      len -= 3 * kBlock;
    }
  }
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
