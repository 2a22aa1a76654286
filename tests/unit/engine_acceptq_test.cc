// The forged segments of objects/tcp_accept_queue.h: header fields and both
// checksums, IPv4 and IPv6, checked by summing again.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "objects/tcp_accept_queue.h"
#include "sys/error.h"

namespace ckpt {
namespace {

uint32_t sum16(const std::string& b, size_t off, size_t len, uint32_t sum = 0) {
  for (size_t i = 0; i < len; i += 2) {
    uint32_t hi = static_cast<uint8_t>(b[off + i]);
    uint32_t lo = i + 1 < len ? static_cast<uint8_t>(b[off + i + 1]) : 0;
    sum += hi << 8 | lo;
  }
  return sum;
}
uint16_t fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}
uint32_t be32(const std::string& b, size_t off) {
  uint32_t v;
  memcpy(&v, b.data() + off, 4);
  return ntohl(v);
}
uint16_t be16(const std::string& b, size_t off) {
  uint16_t v;
  memcpy(&v, b.data() + off, 2);
  return ntohs(v);
}

std::string raw(int family, const char* text) {
  unsigned char buf[16];
  EXPECT_EQ(inet_pton(family, text, buf), 1);
  return std::string(reinterpret_cast<char*>(buf), family == AF_INET ? 4 : 16);
}

acceptq::Segment segment(int family, const char* src, const char* dst) {
  acceptq::Segment s;
  s.family = family;
  s.src_addr = raw(family, src);
  s.dst_addr = raw(family, dst);
  s.src_port = 40001;
  s.dst_port = 7005;
  s.seq = 0xfffffff0;
  s.ack = 0x12345678;
  s.window = 502;
  return s;
}

TEST(ForgedSegment, Ipv4WithTimestampsAndOddPayload) {
  acceptq::Segment s = segment(AF_INET, "10.231.1.2", "10.231.1.1");
  s.timestamps = true;
  s.tsval = 0;
  s.tsecr = 0xdeadbeef;
  std::string payload = "hello, queued world";  // 19 bytes: odd
  s.payload = payload;
  std::string p = acceptq::build_segment(s);
  ASSERT_EQ(p.size(), 20u + 32u + payload.size());
  EXPECT_EQ(static_cast<uint8_t>(p[0]), 0x45);
  EXPECT_EQ(be16(p, 2), p.size());
  EXPECT_EQ(p[9], IPPROTO_TCP);
  EXPECT_EQ(fold(sum16(p, 0, 20)), 0xffff) << "IPv4 header checksum";
  EXPECT_EQ(be16(p, 20), 40001);
  EXPECT_EQ(be16(p, 22), 7005);
  EXPECT_EQ(be32(p, 24), 0xfffffff0u);
  EXPECT_EQ(be32(p, 28), 0x12345678u);
  EXPECT_EQ(static_cast<uint8_t>(p[32]) >> 4, 8);  // 32-byte header
  EXPECT_EQ(static_cast<uint8_t>(p[33]), 0x18);    // ACK | PSH
  EXPECT_EQ(be16(p, 34), 502);
  EXPECT_EQ(p[42], 8);  // TCPOPT_TIMESTAMP
  EXPECT_EQ(be32(p, 48), 0xdeadbeefu);
  EXPECT_EQ(p.substr(52), payload);
  // Pseudo header + segment sums to all ones.
  uint32_t tcp_len = static_cast<uint32_t>(p.size() - 20);
  uint32_t sum = sum16(p, 12, 8) + IPPROTO_TCP + tcp_len;
  EXPECT_EQ(fold(sum16(p, 20, tcp_len, sum)), 0xffff) << "TCP checksum";
}

TEST(ForgedSegment, Ipv6PlainAckAndFin) {
  acceptq::Segment s = segment(AF_INET6, "fd00:231:1::2", "fd00:231:1::1");
  std::string p = acceptq::build_segment(s);
  ASSERT_EQ(p.size(), 40u + 20u);
  EXPECT_EQ(static_cast<uint8_t>(p[0]) >> 4, 6);
  EXPECT_EQ(be16(p, 4), 20);
  EXPECT_EQ(p[6], IPPROTO_TCP);
  EXPECT_EQ(static_cast<uint8_t>(p[53]), 0x10);  // a bare ACK
  uint32_t sum = sum16(p, 8, 32) + IPPROTO_TCP + 20;
  EXPECT_EQ(fold(sum16(p, 40, 20, sum)), 0xffff);

  s.fin = true;
  std::string payload(3000, 'x');
  s.payload = payload;
  p = acceptq::build_segment(s);
  EXPECT_EQ(static_cast<uint8_t>(p[53]), 0x19);  // ACK | PSH | FIN
  uint32_t len = static_cast<uint32_t>(p.size() - 40);
  sum = sum16(p, 8, 32) + IPPROTO_TCP + len;
  EXPECT_EQ(fold(sum16(p, 40, len, sum)), 0xffff);
}

TEST(ForgedSegment, Refused) {
  acceptq::Segment s = segment(AF_INET, "10.0.0.2", "10.0.0.1");
  s.src_addr += "xx";
  EXPECT_THROW(acceptq::build_segment(s), Error);
  s = segment(AF_INET, "10.0.0.2", "10.0.0.1");
  std::string big(70000, 'x');
  s.payload = big;
  EXPECT_THROW(acceptq::build_segment(s), Error);
}

}  // namespace
}  // namespace ckpt
