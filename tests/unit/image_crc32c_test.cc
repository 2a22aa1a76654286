#include "image/crc32c.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

// The two implementations behind crc32c(), defined in crc32c.cc. Declared here
// only: the rest of ckpt has no business choosing a path, but the table path
// never runs on a machine with SSE4.2 unless a test calls it.
namespace ckpt::image::detail {
uint32_t crc32c_table(const uint8_t* p, size_t len, uint32_t state);
uint32_t crc32c_sse42(const uint8_t* p, size_t len, uint32_t state);
bool crc32c_has_sse42();
}  // namespace ckpt::image::detail

namespace {

using ckpt::image::crc32c;
namespace detail = ckpt::image::detail;

uint32_t crc_of(const std::string& s) {
  return crc32c(s.data(), s.size());
}

TEST(Crc32c, StandardCheckValue) {
  EXPECT_EQ(crc_of("123456789"), 0xE3069283u);
}

TEST(Crc32c, Empty) {
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
  EXPECT_EQ(crc32c(nullptr, 0, 0x12345678), 0x12345678u);
}

// RFC 3720 (iSCSI) appendix B.4 test vectors.
TEST(Crc32c, Rfc3720Vectors) {
  std::string zeros(32, '\0');
  std::string ones(32, '\xff');
  std::string inc, dec;
  for (int i = 0; i < 32; i++) {
    inc.push_back(static_cast<char>(i));
    dec.push_back(static_cast<char>(31 - i));
  }
  EXPECT_EQ(crc_of(zeros), 0x8A9136AAu);
  EXPECT_EQ(crc_of(ones), 0x62A8AB43u);
  EXPECT_EQ(crc_of(inc), 0x46DD794Eu);
  EXPECT_EQ(crc_of(dec), 0x113FDB5Cu);
}

TEST(Crc32c, ChainingEqualsOneCall) {
  std::string data;
  std::mt19937 rng(1);
  for (int i = 0; i < 1000; i++) data.push_back(static_cast<char>(rng()));
  uint32_t whole = crc_of(data);
  for (size_t split = 0; split <= data.size(); split++) {
    uint32_t c = crc32c(data.data(), split);
    c = crc32c(data.data() + split, data.size() - split, c);
    ASSERT_EQ(c, whole) << "split at " << split;
  }
}

TEST(Crc32c, TablePathMatchesStandard) {
  const char* s = "123456789";
  EXPECT_EQ(~detail::crc32c_table(reinterpret_cast<const uint8_t*>(s), 9, ~0u), 0xE3069283u);
}

// Every length and misalignment, so the 8-byte loop and the byte tail of the
// SSE4.2 path are both compared against the table.
TEST(Crc32c, HardwareMatchesTable) {
  if (!detail::crc32c_has_sse42()) GTEST_SKIP() << "CPU has no SSE4.2";
  std::vector<uint8_t> buf(4096 + 8);
  std::mt19937 rng(2);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  for (size_t off = 0; off < 8; off++) {
    for (size_t len = 0; len <= 300; len++) {
      ASSERT_EQ(detail::crc32c_sse42(buf.data() + off, len, ~0u),
                detail::crc32c_table(buf.data() + off, len, ~0u))
          << "off " << off << " len " << len;
    }
    ASSERT_EQ(detail::crc32c_sse42(buf.data() + off, 4096, 0x1234),
              detail::crc32c_table(buf.data() + off, 4096, 0x1234));
  }
}

TEST(Crc32c, DetectsEveryBitFlip) {
  std::string data(256, 'x');
  uint32_t good = crc_of(data);
  for (size_t i = 0; i < data.size(); i++) {
    for (int bit = 0; bit < 8; bit++) {
      std::string bad = data;
      bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
      ASSERT_NE(crc_of(bad), good) << "byte " << i << " bit " << bit;
    }
  }
}

}  // namespace

// Buffers of three or more 8 KiB blocks take the interleaved path, whose
// joins must give the same result as the plain chain.
TEST(Crc32c, InterleavedPathMatchesTable) {
  if (!detail::crc32c_has_sse42()) GTEST_SKIP() << "CPU has no SSE4.2";
  std::vector<uint8_t> buf((1u << 20) + 64);
  std::mt19937 rng(3);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  for (size_t len :
       {size_t{3 * 8192}, size_t{3 * 8192 + 5}, size_t{6 * 8192 - 1}, size_t{1u << 20}}) {
    for (size_t off : {size_t{0}, size_t{3}}) {
      ASSERT_EQ(detail::crc32c_sse42(buf.data() + off, len, ~0u),
                detail::crc32c_table(buf.data() + off, len, ~0u))
          << "off " << off << " len " << len;
      ASSERT_EQ(detail::crc32c_sse42(buf.data() + off, len, 0xdeadbeef),
                detail::crc32c_table(buf.data() + off, len, 0xdeadbeef));
    }
  }
}
