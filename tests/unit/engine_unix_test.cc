// sock_diag reply parsing (sys/sock_diag.h), on hand-made netlink buffers
// and on a live query of our own sockets.
#include <gtest/gtest.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "sys/error.h"
#include "sys/sock_diag.h"

namespace ckpt::sockdiag {
namespace {

// Builds netlink messages the way the kernel does.
class Builder {
 public:
  void begin(uint16_t type) {
    start_ = buf_.size();
    nlmsghdr h{};
    h.nlmsg_type = type;
    put(&h, sizeof(h));
  }
  void diag(uint8_t type, uint8_t state, uint32_t ino) {
    unix_diag_msg m{};
    m.udiag_family = AF_UNIX;
    m.udiag_type = type;
    m.udiag_state = state;
    m.udiag_ino = ino;
    put(&m, sizeof(m));
  }
  void attr(uint16_t type, const void* data, size_t len) {
    nlattr a{};
    a.nla_type = type;
    a.nla_len = static_cast<uint16_t>(NLA_HDRLEN + len);
    put(&a, sizeof(a));
    put(data, len);
    pad();
  }
  void end() {
    pad();
    uint32_t len = static_cast<uint32_t>(buf_.size() - start_);
    memcpy(&buf_[start_], &len, 4);
  }
  void error(int err) {
    begin(NLMSG_ERROR);
    nlmsgerr e{};
    e.error = -err;
    put(&e, sizeof(e));
    end();
  }
  void done() {
    begin(NLMSG_DONE);
    int zero = 0;
    put(&zero, sizeof(zero));
    end();
  }
  const std::string& bytes() const { return buf_; }

 private:
  void put(const void* p, size_t n) { buf_.append(static_cast<const char*>(p), n); }
  void pad() {
    while (buf_.size() % 4) buf_.push_back('\0');
  }
  std::string buf_;
  size_t start_ = 0;
};

TEST(SockDiagParse, AllAttributes) {
  Builder b;
  b.begin(SOCK_DIAG_BY_FAMILY);
  b.diag(SOCK_STREAM, 10, 1234);
  const char name[] = "\0abstract";
  b.attr(UNIX_DIAG_NAME, name, sizeof(name) - 1);
  unix_diag_rqlen rq{2, 16};
  b.attr(UNIX_DIAG_RQLEN, &rq, sizeof(rq));
  uint32_t icons[2] = {77, 78};
  b.attr(UNIX_DIAG_ICONS, icons, sizeof(icons));
  unix_diag_vfs vfs{555, 0x801};
  b.attr(UNIX_DIAG_VFS, &vfs, sizeof(vfs));
  uint8_t shut = 2;
  b.attr(UNIX_DIAG_SHUTDOWN, &shut, 1);
  uint32_t unknown = 9;
  b.attr(200, &unknown, sizeof(unknown));  // ignored
  b.end();
  b.begin(SOCK_DIAG_BY_FAMILY);
  b.diag(SOCK_DGRAM, 1, 99);
  uint32_t peer = 100;
  b.attr(UNIX_DIAG_PEER, &peer, sizeof(peer));
  b.end();

  std::vector<UnixInfo> out;
  EXPECT_FALSE(parse_unix_replies(b.bytes().data(), b.bytes().size(), &out));
  ASSERT_EQ(out.size(), 2u);
  const UnixInfo& l = out[0];
  EXPECT_EQ(l.ino, 1234u);
  EXPECT_EQ(l.type, SOCK_STREAM);
  EXPECT_EQ(l.state, 10);
  EXPECT_TRUE(l.has_name);
  EXPECT_EQ(l.name, std::string(name, sizeof(name) - 1));
  EXPECT_TRUE(l.has_rqlen);
  EXPECT_EQ(l.rqueue, 2u);
  EXPECT_EQ(l.wqueue, 16u);
  EXPECT_EQ(l.icons, (std::vector<uint32_t>{77, 78}));
  EXPECT_TRUE(l.has_vfs);
  EXPECT_EQ(l.vfs_ino, 555u);
  EXPECT_EQ(l.vfs_dev, 0x801u);
  EXPECT_EQ(l.shutdown, 2);
  EXPECT_FALSE(l.has_peer);
  EXPECT_EQ(out[1].ino, 99u);
  EXPECT_TRUE(out[1].has_peer);
  EXPECT_EQ(out[1].peer, 100u);
  EXPECT_FALSE(out[1].has_name);
}

TEST(SockDiagParse, DoneEndsTheDump) {
  Builder b;
  b.begin(SOCK_DIAG_BY_FAMILY);
  b.diag(SOCK_SEQPACKET, 7, 5);
  b.end();
  b.done();
  std::vector<UnixInfo> out;
  EXPECT_TRUE(parse_unix_replies(b.bytes().data(), b.bytes().size(), &out));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].type, SOCK_SEQPACKET);
}

TEST(SockDiagParse, ErrorReplyThrowsWithErrno) {
  Builder b;
  b.error(EPERM);
  std::vector<UnixInfo> out;
  try {
    parse_unix_replies(b.bytes().data(), b.bytes().size(), &out);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.err(), EPERM);
  }
}

TEST(SockDiagParse, MalformedInputThrows) {
  Builder b;
  b.begin(SOCK_DIAG_BY_FAMILY);
  b.diag(SOCK_STREAM, 1, 1);
  uint32_t peer = 3;
  b.attr(UNIX_DIAG_PEER, &peer, sizeof(peer));
  b.end();
  std::string good = b.bytes();
  std::vector<UnixInfo> out;
  // Message length beyond the buffer.
  std::string s = good.substr(0, good.size() - 4);
  EXPECT_THROW(parse_unix_replies(s.data(), s.size(), &out), Error);
  // Attribute length beyond the message.
  s = good;
  uint16_t big = 200;
  memcpy(&s[NLMSG_LENGTH(sizeof(unix_diag_msg))], &big, 2);
  EXPECT_THROW(parse_unix_replies(s.data(), s.size(), &out), Error);
  // A short body.
  Builder c;
  c.begin(SOCK_DIAG_BY_FAMILY);
  c.end();
  EXPECT_THROW(parse_unix_replies(c.bytes().data(), c.bytes().size(), &out), Error);
  // Trailing garbage shorter than a header.
  s = good + "xy";
  EXPECT_THROW(parse_unix_replies(s.data(), s.size(), &out), Error);
}

TEST(SockDiagLive, SocketpairAndListener) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  ASSERT_EQ(write(sv[0], "hello", 5), 5);
  int l = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::string name = std::string("\0ckpt-unit-", 11) + std::to_string(getpid());
  memcpy(a.sun_path, name.data(), name.size());
  socklen_t alen = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
  ASSERT_EQ(bind(l, reinterpret_cast<sockaddr*>(&a), alen), 0);
  ASSERT_EQ(listen(l, 5), 0);
  int c = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_EQ(connect(c, reinterpret_cast<sockaddr*>(&a), alen), 0);

  auto ino = [](int fd) {
    struct stat st {};
    fstat(fd, &st);
    return static_cast<uint64_t>(st.st_ino);
  };
  std::vector<UnixInfo> all;
  try {
    all = SockDiag().dump_unix();
  } catch (const Error& e) {
    GTEST_SKIP() << "sock_diag unavailable: " << e.what();
  }
  const UnixInfo *s0 = nullptr, *s1 = nullptr, *li = nullptr;
  for (const auto& u : all) {
    if (u.ino == ino(sv[0])) s0 = &u;
    if (u.ino == ino(sv[1])) s1 = &u;
    if (u.ino == ino(l)) li = &u;
  }
  ASSERT_TRUE(s0 && s1 && li);
  EXPECT_EQ(s0->peer, ino(sv[1]));
  EXPECT_EQ(s1->peer, ino(sv[0]));
  EXPECT_EQ(s1->rqueue, 5u);
  EXPECT_EQ(li->state, 10);  // TCP_LISTEN
  EXPECT_EQ(li->name, name);
  EXPECT_EQ(li->wqueue, 5u);  // backlog
  EXPECT_EQ(li->icons, (std::vector<uint32_t>{static_cast<uint32_t>(ino(c))}));
  close(sv[0]);
  close(sv[1]);
  close(c);
  close(l);
}

}  // namespace
}  // namespace ckpt::sockdiag
