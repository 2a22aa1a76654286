// UDP sockets, IPv4 and IPv6.
//
// Dump: sock_diag gives the bound and connected addresses; options come
// from getsockopt on our duplicate; the datagrams queued for reading are
// peeked one by one with SO_PEEK_OFF (put back as it was), each with its
// sender. With --tcp-established the bound port is locked too, so senders
// get no "port unreachable" while the tree is away.
//
// Restore: socket, options, bind; the queue is refilled before connect
// (a connected socket accepts only its peer), each datagram sent from a
// helper socket bound to its original sender (IP_TRANSPARENT: any address
// may be a source; it goes over loopback and never leaves the host); then
// connect and shutdown.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>

#include "image/record_file.h"
#include "objects/fd_kind.h"
#include "objects/inet_sockets.h"
#include "objects/net_lock.h"
#include "sys/error.h"
#include "sys/log.h"

namespace ckpt {

namespace {

constexpr uint32_t kSettable = O_NONBLOCK | O_ASYNC;
constexpr int kMaxDatagrams = 1 << 20;

int get_int(int fd, int level, int opt, const char* what) {
  int v = 0;
  socklen_t len = sizeof(v);
  if (getsockopt(fd, level, opt, &v, &len) != 0) throw_errno(std::string("getsockopt ") + what);
  return v;
}

void set_int(int fd, int level, int opt, int v, const char* what) {
  if (setsockopt(fd, level, opt, &v, sizeof(v)) != 0) throw_errno(strfmt("%s %d", what, v));
}

bool all_zero(const std::string& raw) {
  return raw.find_first_not_of('\0') == std::string::npos;
}

std::string local_text(const img::UdpSocket& u) {
  std::string s = inet::addr_port(u.family(), u.src_addr(), u.src_port());
  if (u.dst_port()) s += " -> " + inet::addr_port(u.family(), u.dst_addr(), u.dst_port());
  return s;
}

// Peeks every queued datagram without consuming it.
void read_datagrams(int fd, int saved_peek_off, img::InetQueue* q) {
  struct PutBack {
    int fd, off;
    ~PutBack() { setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off)); }
  } put_back{fd, saved_peek_off};
  std::string buf(65536, '\0');
  int off = 0;
  for (int n_dgrams = 0;; n_dgrams++) {
    if (n_dgrams > kMaxDatagrams) throw Error("peek: too many datagrams");
    set_int(fd, SOL_SOCKET, SO_PEEK_OFF, off, "SO_PEEK_OFF");
    sockaddr_storage from{};
    iovec iov{buf.data(), buf.size()};
    msghdr m{};
    m.msg_name = &from;
    m.msg_namelen = sizeof(from);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    ssize_t n = retry_eintr([&] { return recvmsg(fd, &m, MSG_PEEK | MSG_DONTWAIT); });
    if (n < 0 && errno == EAGAIN) break;
    if (n < 0) throw_errno("peek at the receive queue");
    if (m.msg_flags & MSG_TRUNC) throw Error("peek: a datagram over 64 KiB");
    // An empty datagram does not move the peek offset: we would see it forever.
    if (n == 0) throw Error("an empty datagram is queued in it: not supported");
    auto* d = q->add_datagrams();
    d->set_data(buf.data(), static_cast<size_t>(n));
    if (from.ss_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&from);
      d->set_from_addr(std::string(reinterpret_cast<char*>(&a->sin_addr), 4));
      d->set_from_port(ntohs(a->sin_port));
    } else if (from.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&from);
      d->set_from_addr(std::string(reinterpret_cast<char*>(&a->sin6_addr), 16));
      d->set_from_port(ntohs(a->sin6_port));
    }
    off += static_cast<int>(n);
  }
}

class UdpSocketKind : public FdKind {
 public:
  const char* name() const override { return "udp socket"; }

  // ---------------- dump ----------------

  bool matches(const FdProbe& p) const override {
    return p.is_inet() && p.sock_protocol == IPPROTO_UDP && diag_.find(p.st.st_ino);
  }

  void dump(const FdDumpArgs& a, img::FileDesc* d) override {
    const sockdiag::InetInfo* info = diag_.find(a.st.st_ino);
    if (!info) throw Error("socket vanished from sock_diag");
    auto* u = d->mutable_udp_sk();
    u->set_ino(info->ino);
    u->set_family(info->family);
    u->set_shutdown(info->shutdown);
    u->set_ifindex(info->ifindex);
    if (info->sport) {
      u->set_src_addr(info->src);
      u->set_src_port(info->sport);
    }
    if (info->dport) {
      u->set_dst_addr(info->dst);
      u->set_dst_port(info->dport);
    }
    int type = get_int(a.local, SOL_SOCKET, SO_TYPE, "SO_TYPE");
    if (type != SOCK_DGRAM) throw Error(strfmt("UDP socket of type %d is not supported", type));
    inet::check_unsupported(a.local, IPPROTO_UDP);
    inet::save_opts(a.local, info->family, IPPROTO_UDP, false, u->mutable_opts());
    int peek_off = get_int(a.local, SOL_SOCKET, SO_PEEK_OFF, "SO_PEEK_OFF");
    u->set_peek_off(peek_off);
    if (a.ctx.opts.tcp_established && info->sport && a.ctx.net_lock) {
      img::LockedConn c;
      c.set_protocol(IPPROTO_UDP);
      c.set_family(info->family);
      if (!all_zero(info->src)) c.set_local_addr(info->src);
      if (info->family == AF_INET6 && inet::v4_mapped(info->src)) {
        c.set_family(AF_INET);
        c.set_local_addr(info->src.substr(12));
      }
      c.set_local_port(info->sport);
      a.ctx.net_lock->add(lock_table_name(a.ctx.tasks.front()->pid), c);
    }
    img::InetQueue q;
    q.set_ino(info->ino);
    read_datagrams(a.local, peek_off, &q);
    if (q.datagrams_size() > 0) queues_.push_back(std::move(q));
  }

  void finish_dump(DumpContext& ctx,
                   const std::vector<std::pair<const img::FileDesc*, int>>& descs) override {
    if (queues_.empty()) return;
    image::RecordWriter w(kUdpQueuesImage, image::Kind::InetQueues);
    for (const auto& q : queues_) w.add(q);
    w.save(*ctx.sink);
  }

  // ---------------- restore ----------------

  bool owns(const img::FileDesc& d) const override { return d.has_udp_sk(); }

  void load(const image::ImageSource& src) override {
    if (!src.exists(kUdpQueuesImage)) return;
    image::RecordReader r(src, kUdpQueuesImage, image::Kind::InetQueues);
    img::InetQueue q;
    while (r.next(q)) queues_in_[q.ino()] = q;
  }

  UniqueFd open(const img::FileDesc& d, FdRestoreState& st) override {
    const img::UdpSocket& u = d.udp_sk();
    return in_context(strfmt("socket:[%llu] udp %s", static_cast<unsigned long long>(u.ino()),
                             local_text(u).c_str()),
                      [&] {
                        UniqueFd fd = open_udp(u);
                        if (fcntl(fd.get(), F_SETFL, d.flags() & kSettable) != 0)
                          throw_errno("set flags");
                        return fd;
                      });
  }

 private:
  UniqueFd open_udp(const img::UdpSocket& u) {
    int s = socket(static_cast<int>(u.family()), SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) throw_errno("socket");
    UniqueFd fd(s);
    inet::restore_opts(s, u.opts());
    if (u.src_port()) {
      sockaddr_storage a;
      socklen_t len = inet::make_sockaddr(u.family(), u.src_addr(), u.src_port(), &a, u.ifindex());
      if (bind(s, reinterpret_cast<sockaddr*>(&a), len) != 0) {
        if (errno != EADDRNOTAVAIL) throw_errno("bind");
        set_int(s, IPPROTO_IP, IP_FREEBIND, 1, "IP_FREEBIND");
        if (bind(s, reinterpret_cast<sockaddr*>(&a), len) != 0) throw_errno("bind");
        set_int(s, IPPROTO_IP, IP_FREEBIND,
                static_cast<int>(inet::opt_value(u.opts(), "IP_FREEBIND", 0)), "IP_FREEBIND");
      }
    }
    if (auto q = queues_in_.find(u.ino()); q != queues_in_.end()) refill(s, u, q->second);
    if (u.dst_port()) {
      sockaddr_storage a;
      socklen_t len = inet::make_sockaddr(u.family(), u.dst_addr(), u.dst_port(), &a, u.ifindex());
      if (connect(s, reinterpret_cast<sockaddr*>(&a), len) != 0) throw_errno("connect");
    }
    if ((u.shutdown() & 3) && shutdown(s, static_cast<int>(u.shutdown() & 3) - 1) != 0)
      throw_errno("shutdown");
    if (u.peek_off() >= 0) set_int(s, SOL_SOCKET, SO_PEEK_OFF, u.peek_off(), "SO_PEEK_OFF");
    return fd;
  }

  // Sends each datagram to the socket from its original sender's address.
  void refill(int s, const img::UdpSocket& u, const img::InetQueue& q) {
    if (!u.src_port()) throw Error("datagrams queued in an unbound socket");
    size_t total = 0;
    for (const auto& d : q.datagrams()) total += d.data().size() + 1024;
    inet::grow_buf(s, false, static_cast<uint32_t>(2 * total + (1u << 20)));
    // Where to send: the bound address, or loopback for a wildcard bind.
    std::string to = u.src_addr();
    if (all_zero(to)) {
      if (u.family() == AF_INET)
        to = std::string("\x7f\0\0\x01", 4);
      else
        to = std::string(15, '\0') + '\x01';
    }
    sockaddr_storage dst;
    socklen_t dlen = inet::make_sockaddr(u.family(), to, u.src_port(), &dst);
    std::map<std::pair<std::string, uint32_t>, UniqueFd> senders;
    for (const auto& d : q.datagrams()) {
      auto key = std::make_pair(d.from_addr(), d.from_port());
      UniqueFd& from = senders[key];
      if (!from) from = sender(u.family(), d);
      if (retry_eintr([&] {
            return sendto(from.get(), d.data().data(), d.data().size(), MSG_DONTWAIT,
                          reinterpret_cast<sockaddr*>(&dst), dlen);
          }) < 0)
        throw_errno("refill the receive queue");
    }
  }

  // A socket whose datagrams come from d's sender (same family as the
  // receiver: an IPv4 sender of an IPv6 socket is a v4-mapped address).
  static UniqueFd sender(uint32_t family, const img::Datagram& d) {
    int s = socket(static_cast<int>(family), SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) throw_errno("socket");
    UniqueFd fd(s);
    set_int(s, SOL_SOCKET, SO_MARK, static_cast<int>(kLockBypassMark), "SO_MARK");
    if (d.from_addr().empty()) return fd;
    if (family == AF_INET6)
      set_int(s, IPPROTO_IPV6, IPV6_TRANSPARENT, 1, "IPV6_TRANSPARENT");
    else
      set_int(s, IPPROTO_IP, IP_TRANSPARENT, 1, "IP_TRANSPARENT");
    set_int(s, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
    sockaddr_storage a;
    socklen_t len = inet::make_sockaddr(family, d.from_addr(), d.from_port(), &a);
    if (bind(s, reinterpret_cast<sockaddr*>(&a), len) != 0)
      throw_errno("bind a sender at " + inet::addr_port(family, d.from_addr(), d.from_port()));
    return fd;
  }

  // dump
  inet::Diag diag_{IPPROTO_UDP};
  std::vector<img::InetQueue> queues_;
  // restore
  std::map<uint64_t, img::InetQueue> queues_in_;
};

}  // namespace

std::unique_ptr<FdKind> make_udp_socket_kind() {
  return std::make_unique<UdpSocketKind>();
}

}  // namespace ckpt
