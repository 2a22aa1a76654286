#include "objects/tcp_accept_queue.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <optional>
#include <thread>

#include "objects/inet_sockets.h"
#include "objects/net_lock.h"
#include "sys/bpf.h"
#include "sys/bpf_asm.h"
#include "sys/error.h"
#include "sys/log.h"
#include "sys/ns_thread.h"
#include "sys/uapi.h"

namespace ckpt::acceptq {

namespace {

constexpr const char* kKfunc = "bpf_sk_assign_tcp_reqsk";
// Payload per forged segment: loopback's MTU is 64 KiB.
constexpr size_t kSegmentPayload = 60000;
// The program's result before it has seen our ACK.
constexpr int32_t kNotSeen = 0x7fffffff;

// The one map entry: the connection being injected. The tuple is the
// packet's (source = the peer), as bpf_skc_lookup_tcp takes it.
struct Slot {
  bpf_sock_tuple tuple;          // 36 bytes: ipv4 or ipv6
  ckpt_bpf_tcp_req_attrs attrs;  // 20
  int32_t result;                // what the kfunc returned
};
static_assert(sizeof(bpf_sock_tuple) == 36, "bpf_sock_tuple");
static_assert(offsetof(Slot, attrs) == 36 && offsetof(Slot, result) == 56, "Slot layout");

using bpf::Asm;

// The tcx program: a packet with our mark whose tuple leads to a listener
// gets a request socket built from the map's attributes; anything else goes
// on unchanged.
std::vector<bpf_insn> program(int map_fd, uint32_t kfunc_id, int packet_family) {
  enum { kRelease, kNext };
  bool v6 = packet_family == AF_INET6;
  Asm a;
  a.mov(6, 1);  // r6 = skb
  a.ldxw(0, 6, offsetof(__sk_buff, mark));
  a.jnei(0, static_cast<int32_t>(kLockBypassMark), kNext);
  a.ldxw(0, 6, offsetof(__sk_buff, protocol));
  a.jnei(0, htons(v6 ? ETH_P_IPV6 : ETH_P_IP), kNext);
  a.stw(10, -4, 0);  // key 0
  a.mov(2, 10);
  a.addi(2, -4);
  a.ld_map(1, map_fd);
  a.call(BPF_FUNC_map_lookup_elem);
  a.jeqi(0, 0, kNext);
  a.mov(7, 0);  // r7 = the slot
  a.mov(1, 6);
  a.mov(2, 7);
  a.movi(3, v6 ? sizeof(bpf_sock_tuple::ipv6) : sizeof(bpf_sock_tuple::ipv4));
  a.movi(4, -1);  // BPF_F_CURRENT_NETNS
  a.movi(5, 0);
  a.call(BPF_FUNC_skc_lookup_tcp);
  a.jeqi(0, 0, kNext);
  a.mov(8, 0);  // r8 = the socket (a reference)
  // A child already there (the segments after the first) is left alone.
  a.ldxw(1, 8, offsetof(bpf_sock, state));
  a.jnei(1, 10 /* TCP_LISTEN */, kRelease);
  a.mov(1, 8);
  a.call(BPF_FUNC_skc_to_tcp_sock);
  a.jeqi(0, 0, kRelease);
  a.mov(1, 6);
  a.mov(2, 0);
  a.mov(3, 7);
  a.addi(3, offsetof(Slot, attrs));
  a.movi(4, sizeof(ckpt_bpf_tcp_req_attrs));
  a.kcall(kfunc_id);
  a.stxw(7, offsetof(Slot, result), 0);
  a.mov(1, 8);
  a.call(BPF_FUNC_sk_release);
  a.movi(0, TCX_PASS);
  a.exit();
  a.label(kRelease);
  a.mov(1, 8);
  a.call(BPF_FUNC_sk_release);
  a.label(kNext);
  a.movi(0, TCX_NEXT);
  a.exit();
  return a.code();
}

uint32_t csum_add(uint32_t sum, const void* data, size_t len) {
  auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (len & 1) sum += static_cast<uint32_t>(p[len - 1] << 8);
  return sum;
}
uint16_t csum_fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum & 0xffff);
}
void put16(std::string& b, size_t off, uint16_t v) {
  b[off] = static_cast<char>(v >> 8);
  b[off + 1] = static_cast<char>(v & 0xff);
}
void put32(std::string& b, size_t off, uint32_t v) {
  put16(b, off, static_cast<uint16_t>(v >> 16));
  put16(b, off + 2, static_cast<uint16_t>(v & 0xffff));
}

// The packet family of a connection: an IPv4 peer of a dual-stack listener
// sends IPv4 packets.
int packet_family(uint32_t family, const std::string& peer) {
  return family == AF_INET6 && inet::v4_mapped(peer) ? AF_INET : static_cast<int>(family);
}
std::string packet_addr(int pf, const std::string& raw) {
  return pf == AF_INET && raw.size() == 16 ? raw.substr(12) : raw;
}

std::string conn_text(uint32_t family, const img::QueuedConn& c) {
  return inet::addr_port(family, c.peer_addr(), c.peer_port()) + " -> " +
         inet::addr_port(family, c.local_addr(), c.local_port());
}

// The kfunc's BTF id (reading the kernel's BTF takes a few ms: once).
std::optional<uint32_t> kfunc_id() {
  static std::optional<uint32_t> id = bpf::kernel_func_id(kKfunc);
  return id;
}

bool probe(std::string* why) {
  std::optional<uint32_t> id;
  try {
    id = kfunc_id();
  } catch (const Error& e) {
    *why = std::string("/sys/kernel/btf/vmlinux: ") + e.what();
    return false;
  }
  if (!id) {
    *why = std::string("the kernel has no kfunc ") + kKfunc + " (Linux 6.9+ with BTF)";
    return false;
  }
  try {
    UniqueFd map = bpf::map_create_array(sizeof(Slot), 1, "ckpt_acceptq");
    bpf::prog_load(BPF_PROG_TYPE_SCHED_CLS, program(map.get(), *id, AF_INET), "GPL",
                   "ckpt_acceptq");
  } catch (const Error& e) {
    *why = e.what();
    return false;
  }
  return true;
}

}  // namespace

std::string build_segment(const Segment& s) {
  bool v6 = s.family == AF_INET6;
  size_t alen = v6 ? 16 : 4;
  if (s.src_addr.size() != alen || s.dst_addr.size() != alen)
    throw Error("forged segment: address of the wrong size");
  size_t ip = v6 ? 40 : 20, tcp = s.timestamps ? 32 : 20;
  size_t total = ip + tcp + s.payload.size();
  if (total > 65535) throw Error("forged segment: too long");
  std::string b(total, '\0');
  if (v6) {
    b[0] = 0x60;
    put16(b, 4, static_cast<uint16_t>(tcp + s.payload.size()));
    b[6] = IPPROTO_TCP;
    b[7] = 64;
    memcpy(&b[8], s.src_addr.data(), 16);
    memcpy(&b[24], s.dst_addr.data(), 16);
  } else {
    b[0] = 0x45;
    put16(b, 2, static_cast<uint16_t>(total));
    put16(b, 6, 0x4000);  // don't fragment
    b[8] = 64;
    b[9] = IPPROTO_TCP;
    memcpy(&b[12], s.src_addr.data(), 4);
    memcpy(&b[16], s.dst_addr.data(), 4);
    put16(b, 10, csum_fold(csum_add(0, b.data(), 20)));
  }
  put16(b, ip, s.src_port);
  put16(b, ip + 2, s.dst_port);
  put32(b, ip + 4, s.seq);
  put32(b, ip + 8, s.ack);
  b[ip + 12] = static_cast<char>((tcp / 4) << 4);
  b[ip + 13] = static_cast<char>(0x10 | (s.payload.empty() ? 0 : 0x08) | (s.fin ? 0x01 : 0));
  put16(b, ip + 14, s.window);
  if (s.timestamps) {
    b[ip + 20] = TCPOPT_NOP;
    b[ip + 21] = TCPOPT_NOP;
    b[ip + 22] = TCPOPT_TIMESTAMP;
    b[ip + 23] = TCPOLEN_TIMESTAMP;
    put32(b, ip + 24, s.tsval);
    put32(b, ip + 28, s.tsecr);
  }
  if (!s.payload.empty()) memcpy(&b[ip + tcp], s.payload.data(), s.payload.size());
  // Pseudo header: addresses, protocol, TCP length.
  uint32_t len = static_cast<uint32_t>(tcp + s.payload.size());
  uint32_t sum = csum_add(0, s.src_addr.data(), alen);
  sum = csum_add(sum, s.dst_addr.data(), alen);
  sum += IPPROTO_TCP + (len >> 16) + (len & 0xffff);
  sum = csum_add(sum, b.data() + ip, len);
  put16(b, ip + 16, csum_fold(sum));
  return b;
}

bool available(std::string* why) {
  static std::string reason;
  static bool ok = probe(&reason);
  if (why) *why = reason;
  return ok;
}

Injector::Injector(int listener, uint32_t family) : family_(family) {
  std::string why;
  if (!available(&why)) throw Error("connections cannot be put back in an accept queue: " + why);
  int ns = ioctl(listener, SIOCGSKNS);
  if (ns < 0) throw_errno("ioctl(SIOCGSKNS) on the listener");
  netns_.reset(ns);
  map_ = bpf::map_create_array(sizeof(Slot), 1, "ckpt_acceptq");
  run_in_namespace(netns_.get(), CLONE_NEWNET, [&] {
    diag_ = std::make_unique<sockdiag::SockDiag>();
    lo_ = static_cast<int>(if_nametoindex("lo"));
    if (lo_ == 0) throw_errno("the listener's network namespace has no lo");
    // The kernel takes the ACK for a SYN cookie only while syncookies are on.
    UniqueFd f = openat_or_throw(host_proc_dir(), "sys/net/ipv4/tcp_syncookies", O_RDWR);
    char v[16] = {};
    if (pread(f.get(), v, sizeof(v) - 1, 0) < 0) throw_errno("read tcp_syncookies");
    if (atoi(v) == 0) {
      pwrite_full(f.get(), "1\n", 2, 0, "tcp_syncookies");
      syncookies_saved_ = v;
    }
  });
}

Injector::~Injector() {
  v4_ = {};
  v6_ = {};
  if (syncookies_saved_.empty()) return;
  try {
    run_in_namespace(netns_.get(), CLONE_NEWNET, [&] {
      UniqueFd f = openat_or_throw(host_proc_dir(), "sys/net/ipv4/tcp_syncookies", O_WRONLY);
      pwrite_full(f.get(), syncookies_saved_.data(), syncookies_saved_.size(), 0, "tcp_syncookies");
    });
  } catch (const std::exception& e) {
    LOG_ERROR("net.ipv4.tcp_syncookies left at 1: %s", e.what());
  }
}

void Injector::attach(int pf) {
  Prog& p = pf == AF_INET6 ? v6_ : v4_;
  if (p.link) return;
  p.prog = bpf::prog_load(BPF_PROG_TYPE_SCHED_CLS, program(map_.get(), *kfunc_id(), pf), "GPL",
                          "ckpt_acceptq");
  run_in_namespace(netns_.get(), CLONE_NEWNET, [&] {
    p.link = bpf::link_tcx(p.prog.get(), lo_, CKPT_BPF_TCX_INGRESS);
    UniqueFd& raw = pf == AF_INET6 ? raw6_ : raw4_;
    int fd = socket(pf, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
    if (fd < 0) throw_errno("raw socket");
    raw.reset(fd);
    uint32_t mark = kLockBypassMark;
    if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0)
      throw_errno("setsockopt SO_MARK");
  });
}

void Injector::wait_no_handshakes(const std::string& addr, uint16_t port, int wait_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  for (;;) {
    size_t half = 0;
    for (uint8_t fam : {AF_INET, AF_INET6})
      for (const auto& i : diag_->dump_inet(fam, IPPROTO_TCP))
        if (i.state == TCP_SYN_RECV && i.sport == port && (addr.empty() || i.src == addr)) half++;
    if (half == 0) return;
    if (std::chrono::steady_clock::now() > deadline)
      throw Error(
          strfmt("%zu handshake(s) to port %u still half done after %d ms: a connection "
                 "completing now would join the accept queue while it is saved",
                 half, port, wait_ms));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void Injector::inject(const img::QueuedConn& c) {
  const img::TcpRepair& r = c.repair();
  if (c.recv().size() != r.recv_len()) throw Error("queue size in the image does not match");
  int pf = packet_family(family_, c.peer_addr());
  attach(pf);
  bool fin = c.state() == TCP_CLOSE_WAIT;
  // rcv_seq counts the peer's FIN, which comes after its bytes.
  uint32_t first = r.rcv_seq() - r.recv_len() - (fin ? 1 : 0);

  Slot slot{};
  std::string peer = packet_addr(pf, c.peer_addr()), local = packet_addr(pf, c.local_addr());
  if (pf == AF_INET6) {
    memcpy(slot.tuple.ipv6.saddr, peer.data(), 16);
    memcpy(slot.tuple.ipv6.daddr, local.data(), 16);
    slot.tuple.ipv6.sport = htons(static_cast<uint16_t>(c.peer_port()));
    slot.tuple.ipv6.dport = htons(static_cast<uint16_t>(c.local_port()));
  } else {
    memcpy(&slot.tuple.ipv4.saddr, peer.data(), 4);
    memcpy(&slot.tuple.ipv4.daddr, local.data(), 4);
    slot.tuple.ipv4.sport = htons(static_cast<uint16_t>(c.peer_port()));
    slot.tuple.ipv4.dport = htons(static_cast<uint16_t>(c.local_port()));
  }
  auto& at = slot.attrs;
  // ts_recent 0: the kernel skips the PAWS check until the peer's next
  // segment teaches it the peer's clock (which we never saw).
  at.rcv_tsval = 0;
  at.rcv_tsecr = r.timestamp();
  at.mss = static_cast<uint16_t>(r.mss());
  at.wscale_ok = r.wscale();
  at.snd_wscale = static_cast<uint8_t>(r.snd_wscale());
  at.rcv_wscale = static_cast<uint8_t>(r.rcv_wscale());
  at.sack_ok = r.sack();
  at.tstamp_ok = r.timestamps();
  slot.result = kNotSeen;
  bpf::map_update(map_.get(), 0, &slot);

  Segment s;
  s.family = pf;
  s.src_addr = peer;
  s.dst_addr = local;
  s.src_port = static_cast<uint16_t>(c.peer_port());
  s.dst_port = static_cast<uint16_t>(c.local_port());
  s.ack = r.snd_seq();
  uint32_t wnd = r.wscale() ? r.snd_wnd() >> r.snd_wscale() : r.snd_wnd();
  s.window = static_cast<uint16_t>(std::min<uint32_t>(wnd, 65535));
  s.timestamps = r.timestamps();
  s.tsval = 0;
  s.tsecr = r.timestamp();
  sockaddr_storage dst;
  socklen_t dlen = inet::make_sockaddr(static_cast<uint32_t>(pf), local, 0, &dst);
  int raw = (pf == AF_INET6 ? raw6_ : raw4_).get();
  auto send_one = [&](const Segment& seg) {
    std::string pkt = build_segment(seg);
    if (retry_eintr([&] {
          return sendto(raw, pkt.data(), pkt.size(), 0, reinterpret_cast<sockaddr*>(&dst), dlen);
        }) < 0)
      throw_errno("send the forged segment");
  };
  const std::string& data = c.recv();
  size_t off = 0;
  do {
    size_t n = std::min(kSegmentPayload, data.size() - off);
    s.seq = first + static_cast<uint32_t>(off);
    s.payload = std::string_view(data).substr(off, n);
    s.fin = fin && off + n == data.size();
    send_one(s);
    if (off == 0) {
      // The first one makes the child: the program says how that went.
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
      for (;;) {
        Slot got{};
        bpf::map_lookup(map_.get(), 0, &got);
        if (got.result != kNotSeen) {
          if (got.result < 0)
            throw Error(std::string(kKfunc) + " refused the connection", -got.result);
          break;
        }
        if (std::chrono::steady_clock::now() > deadline)
          throw Error("the forged ACK never reached the program on lo (firewall?)");
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    off += n;
  } while (off < data.size());

  // The child is in the accept queue with every unread byte.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (;;) {
    const sockdiag::InetInfo* found = nullptr;
    auto all = diag_->dump_inet(static_cast<uint8_t>(family_), IPPROTO_TCP);
    for (const auto& i : all)
      if (i.sport == c.local_port() && i.dport == c.peer_port() && i.src == c.local_addr() &&
          i.dst == c.peer_addr() && i.state != TCP_SYN_RECV)
        found = &i;
    if (found && found->state == c.state() && found->rqueue == r.recv_len()) {
      LOG_DEBUG("%s: back in the accept queue, %u bytes to read", conn_text(family_, c).c_str(),
                found->rqueue);
      return;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      if (!found) throw Error("no connection in the accept queue after the forged ACK");
      throw Error(strfmt("the connection came back in state %u with %u of %u bytes to read",
                         found->state, found->rqueue, r.recv_len()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace ckpt::acceptq
