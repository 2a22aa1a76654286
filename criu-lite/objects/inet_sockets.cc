#include "objects/inet_sockets.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/time.h>

#include <cerrno>
#include <cstring>

#include "sys/error.h"
#include "sys/log.h"
#include "sys/tcp_repair.h"

namespace ckpt {
namespace inet {

namespace {

enum class OptType { Bool, Int, Linger, Timeval, Text, Buf };
enum : unsigned { kTcp = 1, kUdp = 2, kListen = 4, kAny = kTcp | kUdp };
enum : unsigned { kV4 = 1, kV6 = 2 };  // the socket family it applies to

struct OptDef {
  const char* name;
  int level;
  int opt;
  OptType type;
  unsigned where;
  unsigned family;
};

// The options saved and set again. Those that must be set before bind
// (SO_REUSEADDR, SO_REUSEPORT, SO_BINDTODEVICE, IPV6_V6ONLY, *_FREEBIND)
// are simply set right after socket(), with all the others. TCP_LISTEN-only
// ones carry kListen.
constexpr OptDef kOpts[] = {
    {"SO_REUSEADDR", SOL_SOCKET, SO_REUSEADDR, OptType::Bool, kAny | kListen, kV4 | kV6},
    {"SO_REUSEPORT", SOL_SOCKET, SO_REUSEPORT, OptType::Bool, kAny | kListen, kV4 | kV6},
    {"SO_KEEPALIVE", SOL_SOCKET, SO_KEEPALIVE, OptType::Bool, kTcp | kListen, kV4 | kV6},
    {"SO_BROADCAST", SOL_SOCKET, SO_BROADCAST, OptType::Bool, kUdp, kV4 | kV6},
    {"SO_OOBINLINE", SOL_SOCKET, SO_OOBINLINE, OptType::Bool, kTcp | kListen, kV4 | kV6},
    {"SO_PRIORITY", SOL_SOCKET, SO_PRIORITY, OptType::Int, kAny | kListen, kV4 | kV6},
    {"SO_MARK", SOL_SOCKET, SO_MARK, OptType::Int, kAny | kListen, kV4 | kV6},
    {"SO_RCVLOWAT", SOL_SOCKET, SO_RCVLOWAT, OptType::Int, kAny, kV4 | kV6},
    {"SO_LINGER", SOL_SOCKET, SO_LINGER, OptType::Linger, kTcp | kListen, kV4 | kV6},
    {"SO_RCVTIMEO", SOL_SOCKET, SO_RCVTIMEO, OptType::Timeval, kAny | kListen, kV4 | kV6},
    {"SO_SNDTIMEO", SOL_SOCKET, SO_SNDTIMEO, OptType::Timeval, kAny | kListen, kV4 | kV6},
    {"SO_BINDTODEVICE", SOL_SOCKET, SO_BINDTODEVICE, OptType::Text, kAny | kListen, kV4 | kV6},
    {"SO_SNDBUF", SOL_SOCKET, SO_SNDBUF, OptType::Buf, kAny | kListen, kV4 | kV6},
    {"SO_RCVBUF", SOL_SOCKET, SO_RCVBUF, OptType::Buf, kAny | kListen, kV4 | kV6},
    {"IP_TOS", IPPROTO_IP, IP_TOS, OptType::Int, kAny | kListen, kV4},
    {"IP_TTL", IPPROTO_IP, IP_TTL, OptType::Int, kAny | kListen, kV4},
    {"IP_FREEBIND", IPPROTO_IP, IP_FREEBIND, OptType::Bool, kAny | kListen, kV4 | kV6},
    {"IP_TRANSPARENT", IPPROTO_IP, IP_TRANSPARENT, OptType::Bool, kAny | kListen, kV4 | kV6},
    {"IP_PKTINFO", IPPROTO_IP, IP_PKTINFO, OptType::Bool, kUdp, kV4},
    {"IP_RECVERR", IPPROTO_IP, IP_RECVERR, OptType::Bool, kAny, kV4},
    {"IP_MTU_DISCOVER", IPPROTO_IP, IP_MTU_DISCOVER, OptType::Int, kAny | kListen, kV4},
    {"IPV6_V6ONLY", IPPROTO_IPV6, IPV6_V6ONLY, OptType::Bool, kAny | kListen, kV6},
    {"IPV6_TCLASS", IPPROTO_IPV6, IPV6_TCLASS, OptType::Int, kAny | kListen, kV6},
    {"IPV6_UNICAST_HOPS", IPPROTO_IPV6, IPV6_UNICAST_HOPS, OptType::Int, kAny | kListen, kV6},
    {"IPV6_RECVPKTINFO", IPPROTO_IPV6, IPV6_RECVPKTINFO, OptType::Bool, kUdp, kV6},
    {"IPV6_RECVERR", IPPROTO_IPV6, IPV6_RECVERR, OptType::Bool, kAny, kV6},
    {"TCP_NODELAY", IPPROTO_TCP, TCP_NODELAY, OptType::Bool, kTcp | kListen, kV4 | kV6},
    {"TCP_CORK", IPPROTO_TCP, TCP_CORK, OptType::Bool, kTcp, kV4 | kV6},
    {"TCP_KEEPIDLE", IPPROTO_TCP, TCP_KEEPIDLE, OptType::Int, kTcp | kListen, kV4 | kV6},
    {"TCP_KEEPINTVL", IPPROTO_TCP, TCP_KEEPINTVL, OptType::Int, kTcp | kListen, kV4 | kV6},
    {"TCP_KEEPCNT", IPPROTO_TCP, TCP_KEEPCNT, OptType::Int, kTcp | kListen, kV4 | kV6},
    {"TCP_USER_TIMEOUT", IPPROTO_TCP, TCP_USER_TIMEOUT, OptType::Int, kTcp | kListen, kV4 | kV6},
    {"TCP_SYNCNT", IPPROTO_TCP, TCP_SYNCNT, OptType::Int, kTcp | kListen, kV4 | kV6},
    {"TCP_LINGER2", IPPROTO_TCP, TCP_LINGER2, OptType::Int, kTcp | kListen, kV4 | kV6},
    {"TCP_NOTSENT_LOWAT", IPPROTO_TCP, TCP_NOTSENT_LOWAT, OptType::Int, kTcp | kListen, kV4 | kV6},
    {"TCP_DEFER_ACCEPT", IPPROTO_TCP, TCP_DEFER_ACCEPT, OptType::Int, kListen, kV4 | kV6},
    {"TCP_FASTOPEN", IPPROTO_TCP, TCP_FASTOPEN, OptType::Int, kListen, kV4 | kV6},
    {"TCP_CONGESTION", IPPROTO_TCP, TCP_CONGESTION, OptType::Text, kTcp | kListen, kV4 | kV6},
};

const OptDef* find_opt(const std::string& name) {
  for (const auto& d : kOpts)
    if (name == d.name) return &d;
  return nullptr;
}

// Reads one option; false if this socket does not have it (ENOPROTOOPT).
bool get_opt(int fd, const OptDef& d, img::SockOpt* o) {
  union {
    int i;
    linger l;
    timeval tv;
    char text[64];
  } v{};
  socklen_t len = sizeof(v);
  if (getsockopt(fd, d.level, d.opt, &v, &len) != 0) {
    if (errno == ENOPROTOOPT || errno == EOPNOTSUPP) return false;
    throw_errno(std::string("getsockopt ") + d.name);
  }
  o->set_name(d.name);
  switch (d.type) {
    case OptType::Bool:
      o->set_value(v.i != 0);
      break;
    case OptType::Int:
    case OptType::Buf:
      o->set_value(v.i);
      break;
    case OptType::Linger:
      o->set_value(v.l.l_onoff ? v.l.l_linger : -1);
      break;
    case OptType::Timeval:
      o->set_value(static_cast<int64_t>(v.tv.tv_sec) * 1000000 + v.tv.tv_usec);
      break;
    case OptType::Text:
      o->set_text(std::string(v.text, strnlen(v.text, len)));
      break;
  }
  return true;
}

void set_opt(int fd, const OptDef& d, const img::SockOpt& o) {
  int rc = 0;
  switch (d.type) {
    case OptType::Bool:
    case OptType::Int: {
      int i = static_cast<int>(o.value());
      rc = setsockopt(fd, d.level, d.opt, &i, sizeof(i));
      break;
    }
    case OptType::Buf: {
      // getsockopt says twice what was set; FORCE: not clamped by
      // net.core.[rw]mem_max, as the dumped value may have been.
      int half = static_cast<int>(o.value() / 2);
      rc = setsockopt(fd, SOL_SOCKET, d.opt == SO_SNDBUF ? SO_SNDBUFFORCE : SO_RCVBUFFORCE, &half,
                      sizeof(half));
      break;
    }
    case OptType::Linger: {
      linger l{};
      l.l_onoff = o.value() >= 0;
      l.l_linger = o.value() >= 0 ? static_cast<int>(o.value()) : 0;
      rc = setsockopt(fd, d.level, d.opt, &l, sizeof(l));
      break;
    }
    case OptType::Timeval: {
      timeval tv{};
      tv.tv_sec = o.value() / 1000000;
      tv.tv_usec = o.value() % 1000000;
      rc = setsockopt(fd, d.level, d.opt, &tv, sizeof(tv));
      break;
    }
    case OptType::Text:
      if (o.text().empty()) return;
      rc = setsockopt(fd, d.level, d.opt, o.text().data(), static_cast<socklen_t>(o.text().size()));
      break;
  }
  if (rc != 0) {
    if (d.type == OptType::Text) throw_errno(strfmt("setsockopt %s %s", d.name, o.text().c_str()));
    throw_errno(strfmt("setsockopt %s %lld", d.name, static_cast<long long>(o.value())));
  }
}

}  // namespace

const sockdiag::InetInfo* Diag::find(uint64_t ino) const {
  auto it = by_ino_.find(ino);
  if (it == by_ino_.end() && !refreshed_for_.count(ino)) {
    refreshed_for_.insert(ino);
    by_ino_.clear();
    sockdiag::SockDiag sd;
    for (uint8_t fam : {AF_INET, AF_INET6})
      for (auto& i : sd.dump_inet(fam, protocol_)) by_ino_[i.ino] = std::move(i);
    it = by_ino_.find(ino);
  }
  return it == by_ino_.end() ? nullptr : &it->second;
}

bool v4_mapped(const std::string& raw) {
  static const unsigned char prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return raw.size() == 16 && memcmp(raw.data(), prefix, 12) == 0;
}

std::string addr_port(uint32_t family, const std::string& raw, uint32_t port) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (raw.empty())
    strcpy(buf, family == AF_INET6 ? "::" : "0.0.0.0");
  else if ((family == AF_INET && raw.size() == 4) || (family == AF_INET6 && raw.size() == 16))
    inet_ntop(static_cast<int>(family), raw.data(), buf, sizeof(buf));
  return family == AF_INET6 ? strfmt("[%s]:%u", buf, port) : strfmt("%s:%u", buf, port);
}

socklen_t make_sockaddr(uint32_t family, const std::string& raw, uint32_t port,
                        sockaddr_storage* out, uint32_t scope) {
  *out = sockaddr_storage{};
  if (family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(out);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(port));
    if (raw.size() == 4)
      memcpy(&a->sin_addr, raw.data(), 4);
    else if (!raw.empty())
      throw Error("bad IPv4 address in image");
    return sizeof(sockaddr_in);
  }
  if (family != AF_INET6) throw Error(strfmt("address family %u in image", family));
  auto* a = reinterpret_cast<sockaddr_in6*>(out);
  a->sin6_family = AF_INET6;
  a->sin6_port = htons(static_cast<uint16_t>(port));
  if (raw.size() == 16)
    memcpy(&a->sin6_addr, raw.data(), 16);
  else if (!raw.empty())
    throw Error("bad IPv6 address in image");
  if (IN6_IS_ADDR_LINKLOCAL(&a->sin6_addr)) a->sin6_scope_id = scope;
  return sizeof(sockaddr_in6);
}

void save_opts(int fd, uint32_t family, int protocol, bool listening,
               google::protobuf::RepeatedPtrField<img::SockOpt>* out) {
  unsigned where = listening ? kListen : protocol == IPPROTO_UDP ? kUdp : kTcp;
  unsigned fam = family == AF_INET6 ? kV6 : kV4;
  for (const auto& d : kOpts) {
    if (!(d.where & where) || !(d.family & fam)) continue;
    img::SockOpt o;
    if (get_opt(fd, d, &o)) *out->Add() = std::move(o);
  }
}

void restore_opts(int fd, const google::protobuf::RepeatedPtrField<img::SockOpt>& opts) {
  for (const auto& o : opts) {
    const OptDef* d = find_opt(o.name());
    if (!d) throw Error("unknown socket option in image: " + o.name());
    set_opt(fd, *d, o);
  }
}

int64_t opt_value(const google::protobuf::RepeatedPtrField<img::SockOpt>& opts, const char* name,
                  int64_t def) {
  for (const auto& o : opts)
    if (o.name() == name) return o.value();
  return def;
}

void grow_buf(int fd, bool snd, uint32_t bytes) {
  int opt = snd ? SO_SNDBUF : SO_RCVBUF;
  int cur = 0;
  socklen_t len = sizeof(cur);
  if (getsockopt(fd, SOL_SOCKET, opt, &cur, &len) != 0) throw_errno("getsockopt buffer size");
  if (static_cast<uint32_t>(cur) >= bytes) return;
  int half = static_cast<int>(bytes / 2 + 1);
  if (setsockopt(fd, SOL_SOCKET, snd ? SO_SNDBUFFORCE : SO_RCVBUFFORCE, &half, sizeof(half)) != 0)
    throw_errno(strfmt("%s %u", snd ? "SO_SNDBUFFORCE" : "SO_RCVBUFFORCE", bytes));
}

void check_unsupported(int fd, int protocol) {
  // SO_GET_FILTER with a zero length returns the number of instructions.
  socklen_t n = 0;
  if (getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, nullptr, &n) == 0 && n > 0)
    throw Error("a socket filter (SO_ATTACH_FILTER) is attached: not supported");
  if (protocol == IPPROTO_TCP) {
    char ulp[32] = {};
    socklen_t len = sizeof(ulp);
    if (getsockopt(fd, IPPROTO_TCP, TCP_ULP, ulp, &len) == 0 && ulp[0] != '\0')
      throw Error(strfmt("upper layer protocol '%s' (TCP_ULP) is not supported", ulp));
  }
}

}  // namespace inet

void RepairedSockets::leave_repair() {
  for (auto& s : socks_)
    if (int err = tcp_repair::off_noexcept(s.fd.get(), false))
      LOG_ERROR("%s: cannot leave TCP repair mode: %s", s.who.c_str(), strerror(err));
  socks_.clear();
}

}  // namespace ckpt
