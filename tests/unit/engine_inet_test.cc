// TCP and UDP: inet_diag reply parsing on hand-made netlink buffers and on
// our own sockets, TCP repair on a loopback connection, the network lock's
// rules and a live lock.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fcntl.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "objects/inet_sockets.h"
#include "objects/net_lock.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/netns_exec.h"
#include "sys/nftables.h"
#include "sys/sock_diag.h"
#include "sys/tcp_repair.h"

namespace ckpt {
namespace {

std::string inet_reply(uint8_t family, uint8_t state, uint32_t ino, uint8_t shutdown, int v6only) {
  std::string buf;
  auto put = [&](const void* p, size_t n) { buf.append(static_cast<const char*>(p), n); };
  auto pad = [&] {
    while (buf.size() % 4) buf.push_back('\0');
  };
  nlmsghdr h{};
  h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  put(&h, sizeof(h));
  inet_diag_msg m{};
  m.idiag_family = family;
  m.idiag_state = state;
  m.idiag_inode = ino;
  m.idiag_rqueue = 5;
  m.idiag_wqueue = 7;
  m.id.idiag_sport = htons(7000);
  m.id.idiag_dport = htons(51234);
  m.id.idiag_if = 3;
  if (family == AF_INET) {
    m.id.idiag_src[0] = htonl(0x0a000001);
    m.id.idiag_dst[0] = htonl(0x0a000002);
  } else {
    inet_pton(AF_INET6, "fd00::1", m.id.idiag_src);
    inet_pton(AF_INET6, "fd00::2", m.id.idiag_dst);
  }
  put(&m, sizeof(m));
  auto attr = [&](uint16_t type, uint8_t v) {
    nlattr a{};
    a.nla_type = type;
    a.nla_len = NLA_HDRLEN + 1;
    put(&a, sizeof(a));
    put(&v, 1);
    pad();
  };
  attr(INET_DIAG_SHUTDOWN, shutdown);
  if (v6only >= 0) attr(INET_DIAG_SKV6ONLY, static_cast<uint8_t>(v6only));
  uint32_t len = static_cast<uint32_t>(buf.size());
  memcpy(&buf[0], &len, 4);
  nlmsghdr done{};
  done.nlmsg_type = NLMSG_DONE;
  done.nlmsg_len = NLMSG_LENGTH(4);
  put(&done, sizeof(done));
  int zero = 0;
  put(&zero, 4);
  return buf;
}

TEST(InetDiagParse, IPv4AllFields) {
  std::string b = inet_reply(AF_INET, TCP_ESTABLISHED, 4242, 2, -1);
  std::vector<sockdiag::InetInfo> out;
  EXPECT_TRUE(sockdiag::parse_inet_replies(b.data(), b.size(), IPPROTO_TCP, &out));
  ASSERT_EQ(out.size(), 1u);
  const auto& i = out[0];
  EXPECT_EQ(i.ino, 4242u);
  EXPECT_EQ(i.family, AF_INET);
  EXPECT_EQ(i.protocol, IPPROTO_TCP);
  EXPECT_EQ(i.state, TCP_ESTABLISHED);
  EXPECT_EQ(i.shutdown, 2);
  EXPECT_EQ(i.sport, 7000);
  EXPECT_EQ(i.dport, 51234);
  EXPECT_EQ(i.rqueue, 5u);
  EXPECT_EQ(i.wqueue, 7u);
  EXPECT_EQ(i.ifindex, 3u);
  EXPECT_EQ(i.src, std::string("\x0a\x00\x00\x01", 4));
  EXPECT_EQ(i.dst, std::string("\x0a\x00\x00\x02", 4));
  EXPECT_FALSE(i.has_v6only);
  EXPECT_EQ(inet::addr_port(i.family, i.src, i.sport), "10.0.0.1:7000");
}

TEST(InetDiagParse, IPv6WithV6Only) {
  std::string b = inet_reply(AF_INET6, TCP_LISTEN, 9, 0, 1);
  std::vector<sockdiag::InetInfo> out;
  EXPECT_TRUE(sockdiag::parse_inet_replies(b.data(), b.size(), IPPROTO_TCP, &out));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].src.size(), 16u);
  EXPECT_TRUE(out[0].has_v6only);
  EXPECT_TRUE(out[0].v6only);
  EXPECT_EQ(inet::addr_port(AF_INET6, out[0].src, 7000), "[fd00::1]:7000");
}

TEST(InetDiagParse, TruncatedMessageThrows) {
  std::string b = inet_reply(AF_INET, TCP_ESTABLISHED, 1, 0, -1);
  uint32_t short_len = NLMSG_LENGTH(8);
  memcpy(&b[0], &short_len, 4);
  std::vector<sockdiag::InetInfo> out;
  EXPECT_THROW(sockdiag::parse_inet_replies(b.data(), b.size(), IPPROTO_TCP, &out), Error);
}

uint64_t inode_of(int fd) {
  struct stat st {};
  EXPECT_EQ(fstat(fd, &st), 0);
  return st.st_ino;
}

// A loopback connection: listener l, client c, accepted a.
struct Loop {
  UniqueFd l, c, a;
  sockaddr_in addr{};
  Loop() {
    l.reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(bind(l.get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
    EXPECT_EQ(listen(l.get(), 4), 0);
    EXPECT_EQ(getsockname(l.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
    c.reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    EXPECT_EQ(connect(c.get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
    a.reset(accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
  }
};

TEST(InetDiagLive, FindsOwnSocketsByInode) {
  Loop lp;
  UniqueFd u(socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in6 a6{};
  a6.sin6_family = AF_INET6;
  a6.sin6_addr = in6addr_loopback;
  ASSERT_EQ(bind(u.get(), reinterpret_cast<sockaddr*>(&a6), sizeof(a6)), 0);
  inet::Diag tcp(IPPROTO_TCP), udp(IPPROTO_UDP);
  const auto* l = tcp.find(inode_of(lp.l.get()));
  const auto* a = tcp.find(inode_of(lp.a.get()));
  ASSERT_TRUE(l && a);
  EXPECT_EQ(l->state, TCP_LISTEN);
  EXPECT_EQ(l->wqueue, 4u);  // the backlog
  EXPECT_EQ(a->state, TCP_ESTABLISHED);
  EXPECT_EQ(a->sport, ntohs(lp.addr.sin_port));
  const auto* d = udp.find(inode_of(u.get()));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->family, AF_INET6);
  EXPECT_NE(d->sport, 0);
  EXPECT_EQ(tcp.find(inode_of(u.get())), nullptr);
}

TEST(TcpRepairLive, ReadsSequenceNumbersAndQueues) {
  if (!tcp_repair::available()) GTEST_SKIP() << "TCP_REPAIR not permitted here";
  Loop lp;
  const std::string sent = "hello, repair mode";
  ASSERT_EQ(write(lp.c.get(), sent.data(), sent.size()), static_cast<ssize_t>(sent.size()));
  usleep(20000);  // loopback delivery and its ACK
  int fd = lp.a.get();
  tcp_repair::on(fd);
  tcp_repair::select_queue(fd, TCP_RECV_QUEUE);
  uint32_t rcv = tcp_repair::queue_seq(fd);
  EXPECT_EQ(tcp_repair::inq(fd), sent.size());
  EXPECT_EQ(tcp_repair::peek_queue(fd, sent.size()), sent);
  tcp_repair::select_queue(fd, TCP_SEND_QUEUE);
  EXPECT_EQ(tcp_repair::outq(fd), 0u);
  tcp_repair::select_queue(fd, TCP_NO_QUEUE);
  // The client's next byte is the server's rcv_nxt.
  tcp_repair::on(lp.c.get());
  tcp_repair::select_queue(lp.c.get(), TCP_SEND_QUEUE);
  EXPECT_EQ(tcp_repair::queue_seq(lp.c.get()), rcv);
  tcp_repair_window w = tcp_repair::window(fd);
  EXPECT_GT(w.rcv_wnd, 0u);
  EXPECT_GT(tcp_repair::mss(fd), 0u);
  tcp_repair::off(lp.c.get(), false);
  tcp_repair::off(fd, false);
  char buf[64];
  EXPECT_EQ(read(fd, buf, sizeof(buf)), static_cast<ssize_t>(sent.size()));
}

img::LockedConn conn(uint32_t family, int proto, const char* l, uint32_t lp, const char* r,
                     uint32_t rp) {
  img::LockedConn c;
  c.set_family(family);
  c.set_protocol(static_cast<uint32_t>(proto));
  char raw[16];
  if (l) {
    inet_pton(static_cast<int>(family), l, raw);
    c.set_local_addr(std::string(raw, family == AF_INET ? 4 : 16));
  }
  if (r) {
    inet_pton(static_cast<int>(family), r, raw);
    c.set_remote_addr(std::string(raw, family == AF_INET ? 4 : 16));
  }
  c.set_local_port(lp);
  c.set_remote_port(rp);
  return c;
}

TEST(NetLockRules, BothDirectionsOfExactlyOneConnection) {
  std::string r = lock_rules("t", conn(AF_INET, IPPROTO_TCP, "10.0.0.1", 7000, "10.0.0.2", 51234));
  EXPECT_NE(r.find("add rule inet t lock_in meta mark != 0x636b7074 ip daddr 10.0.0.1 tcp dport "
                   "7000 ip saddr 10.0.0.2 tcp sport 51234 drop"),
            std::string::npos)
      << r;
  EXPECT_NE(r.find("add rule inet t lock_out meta mark != 0x636b7074 ip saddr 10.0.0.1 tcp sport "
                   "7000 ip daddr 10.0.0.2 tcp dport 51234 drop"),
            std::string::npos)
      << r;
  EXPECT_EQ(describe(conn(AF_INET6, IPPROTO_TCP, "fd00::1", 80, "fd00::2", 9)),
            "tcp [fd00::1]:80 <-> [fd00::2]:9");
}

TEST(NetLockRules, UdpOnEveryAddressIsThePortAlone) {
  std::string r = lock_rules("t", conn(AF_INET6, IPPROTO_UDP, nullptr, 53, nullptr, 0));
  EXPECT_NE(r.find("lock_in meta mark != 0x636b7074 udp dport 53 drop"), std::string::npos) << r;
  EXPECT_EQ(r.find("ip6"), std::string::npos) << r;
}

TEST(NetLockLive, LocksAndUnlocks) {
  std::string err;
  if (getuid() != 0 || !NftCtx().try_run("list tables\n", &err)) GTEST_SKIP() << "no nftables";
  std::string table = "ckpt_lock_tcp_unittest_" + std::to_string(getpid());
  {
    NetLock lock;
    lock.add(table, conn(AF_INET, IPPROTO_TCP, "127.0.0.1", 1, "127.0.0.1", 2));
    lock.add(table, conn(AF_INET6, IPPROTO_UDP, "::1", 3, nullptr, 0));
    EXPECT_TRUE(NftCtx().try_run("list table inet " + table + "\n", nullptr));
    EXPECT_EQ(lock.image().conns_size(), 2);
    // A second install of the same image replaces it in one transaction.
    NetLock again;
    again.relock(lock.image());
    again.keep();
  }  // destroyed without keep(): removed
  EXPECT_FALSE(NftCtx().try_run("list table inet " + table + "\n", nullptr));
}

// A named network namespace for a test (ip netns), deleted with it.
struct TestNetns {
  explicit TestNetns(const std::string& base) : name(base + "-" + std::to_string(getpid())) {
    made = system(("ip netns add " + name + " 2>/dev/null").c_str()) == 0;
  }
  ~TestNetns() {
    if (made) (void)!system(("ip netns del " + name).c_str());
  }
  UniqueFd open() const { return open_or_throw("/run/netns/" + name, O_RDONLY); }
  std::string name;
  bool made = false;
};

// A container's own network namespace: everything but lo dropped inside it,
// nothing changed in ours.
TEST(NetLockLive, WholeNetworkNamespace) {
  std::string err;
  if (getuid() != 0 || !NftCtx().try_run("list tables\n", &err)) GTEST_SKIP() << "no nftables";
  TestNetns tns("tcp-unit");
  if (!tns.made) GTEST_SKIP() << "no ip netns";
  const std::string& ns = tns.name;
  UniqueFd nsfd = tns.open();
  std::string table = "ckpt_lock_tcp_unit_ns";
  std::string list = "ip netns exec " + ns + " nft list table inet " + table + " >/dev/null 2>&1";
  {
    NetLock lock;
    lock.lock_netns(nsfd.get(), table);
    EXPECT_EQ(system(list.c_str()), 0);
    EXPECT_FALSE(NftCtx().try_run("list table inet " + table + "\n", nullptr));  // not ours
    lock.unlock();
    EXPECT_NE(system(list.c_str()), 0);
  }
}

// A TCP socket made in a network namespace (it stays that namespace's).
UniqueFd socket_in(int netns_fd) {
  UniqueFd out;
  run_in_netns(netns_fd, [&] { out = UniqueFd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)); });
  if (!out) throw_errno("socket");
  return out;
}

sockaddr_in inet(const char* ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

// Whether a connection from sk to `to` is accepted within 300 ms.
bool connects(int sk, const sockaddr_in& to) {
  fcntl(sk, F_SETFL, O_NONBLOCK);
  int r = connect(sk, reinterpret_cast<const sockaddr*>(&to), sizeof to);
  if (r == 0) return true;
  if (errno != EINPROGRESS) return false;
  pollfd p{sk, POLLOUT, 0};
  if (poll(&p, 1, 300) != 1) return false;
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(sk, SOL_SOCKET, SO_ERROR, &err, &len);
  return err == 0;
}

// The lock as packets see it: a peer on a veth is cut off while it holds,
// loopback inside is not, and the peer gets through once it is lifted.
TEST(NetLockLive, WholeNamespaceDropsAllButLoopback) {
  std::string err;
  if (getuid() != 0 || !NftCtx().try_run("list tables\n", &err)) GTEST_SKIP() << "no nftables";
  TestNetns a("lock-a"), b("lock-b");
  if (!a.made || !b.made) GTEST_SKIP() << "no ip netns";
  std::string veth = "ckla" + std::to_string(getpid() % 100000);
  std::string setup = "ip link add " + veth + " netns " + a.name + " type veth peer name " + veth +
                      "b netns " + b.name + " && ip -n " + a.name + " addr add 10.98.0.1/24 dev " +
                      veth + " && ip -n " + a.name + " link set " + veth + " up && ip -n " +
                      a.name + " link set lo up && ip -n " + b.name +
                      " addr add 10.98.0.2/24 dev " + veth + "b && ip -n " + b.name + " link set " +
                      veth + "b up";
  ASSERT_EQ(system(setup.c_str()), 0) << setup;
  UniqueFd nsa = a.open(), nsb = b.open();
  UniqueFd srv = socket_in(nsa.get()), lo_srv = socket_in(nsa.get());
  sockaddr_in at = inet("10.98.0.1", 7777), lo_at = inet("127.0.0.1", 7778);
  int one = 1;
  setsockopt(srv.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ASSERT_EQ(bind(srv.get(), reinterpret_cast<sockaddr*>(&at), sizeof at), 0);
  ASSERT_EQ(bind(lo_srv.get(), reinterpret_cast<sockaddr*>(&lo_at), sizeof lo_at), 0);
  ASSERT_EQ(listen(srv.get(), 8), 0);
  ASSERT_EQ(listen(lo_srv.get(), 8), 0);
  ASSERT_TRUE(connects(socket_in(nsb.get()).get(), at)) << "the veth does not work";

  NetLock lock;
  lock.prepare(nsa.get(), "ckpt_lock_unit_pkts");
  EXPECT_TRUE(connects(socket_in(nsb.get()).get(), at)) << "prepared, yet it drops";
  lock.lock_netns(nsa.get(), "ckpt_lock_unit_pkts");
  EXPECT_FALSE(connects(socket_in(nsb.get()).get(), at)) << "locked, yet a peer got in";
  EXPECT_TRUE(connects(socket_in(nsa.get()).get(), lo_at)) << "locked loopback";
  lock.lift();
  EXPECT_TRUE(connects(socket_in(nsb.get()).get(), at)) << "lifted, yet it drops";
  // Locked from scratch (a restore's lock): the same.
  NetLock fresh;
  fresh.lock_netns(nsb.get(), "ckpt_lock_unit_fresh");
  EXPECT_FALSE(connects(socket_in(nsb.get()).get(), at)) << "a fresh lock let a packet out";
  fresh.lift();
  EXPECT_TRUE(connects(socket_in(nsb.get()).get(), at));
}

// Prepared before the stop: the table is there but drops nothing until
// lock_netns(); lift() takes the rules out and leaves the table for
// unlock(). A lock in another namespace than the prepared one removes the
// prepared table.
TEST(NetLockLive, PreparedThenLockedLiftedAndRemoved) {
  std::string err;
  if (getuid() != 0 || !NftCtx().try_run("list tables\n", &err)) GTEST_SKIP() << "no nftables";
  TestNetns tns("tcp-unit-prep");
  if (!tns.made) GTEST_SKIP() << "no ip netns";
  const std::string& ns = tns.name;
  UniqueFd nsfd = tns.open();
  std::string table = "ckpt_lock_tcp_unit_prep";
  auto drops = [&] {
    std::string cmd =
        "ip netns exec " + ns + " nft list table inet " + table + " 2>/dev/null | grep -q drop";
    return system(cmd.c_str()) == 0;
  };
  std::string exists = "ip netns exec " + ns + " nft list table inet " + table + " >/dev/null 2>&1";
  {
    NetLock lock;
    lock.prepare(nsfd.get(), table);
    nsfd.reset();  // prepare() keeps its own reference
    EXPECT_EQ(system(exists.c_str()), 0);
    EXPECT_FALSE(drops());
    EXPECT_FALSE(lock.active());
    UniqueFd again = tns.open();
    lock.lock_netns(again.get(), table);
    EXPECT_TRUE(lock.active());
    EXPECT_TRUE(drops());
    lock.lift();
    EXPECT_FALSE(lock.active());
    EXPECT_FALSE(drops());
    EXPECT_EQ(system(exists.c_str()), 0);
    lock.unlock();
    EXPECT_NE(system(exists.c_str()), 0);
  }
  {
    UniqueFd theirs = tns.open();  // outlives the lock
    NetLock lock;
    lock.prepare(-1, table);  // ours
    lock.lock_netns(theirs.get(), table);
    EXPECT_FALSE(NftCtx().try_run("list table inet " + table + "\n", nullptr));  // moved
    EXPECT_TRUE(drops());
  }  // destroyed: removed
  EXPECT_NE(system(exists.c_str()), 0);
  {
    // A dump that killed a tree with no connection keeps no empty table.
    NetLock lock;
    lock.prepare(-1, table);
    EXPECT_TRUE(NftCtx().try_run("list table inet " + table + "\n", nullptr));
    lock.keep();
    EXPECT_FALSE(NftCtx().try_run("list table inet " + table + "\n", nullptr));
  }
}

}  // namespace
}  // namespace ckpt
