#include "sys/sock_diag.h"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netinet/in.h>

#include <cstring>

#include "sys/error.h"

namespace ckpt::sockdiag {

namespace {

uint32_t u32_at(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

void parse_one(const nlmsghdr* h, size_t len, std::vector<UnixInfo>* out) {
  if (len < NLMSG_LENGTH(sizeof(unix_diag_msg))) throw Error("sock_diag: short unix_diag_msg");
  unix_diag_msg m;
  memcpy(&m, NLMSG_DATA(h), sizeof(m));
  UnixInfo u;
  u.ino = m.udiag_ino;
  u.type = m.udiag_type;
  u.state = m.udiag_state;
  auto* base = reinterpret_cast<const uint8_t*>(h);
  size_t off = NLMSG_LENGTH(sizeof(unix_diag_msg));
  off = NLMSG_ALIGN(off);
  while (off + sizeof(nlattr) <= len) {
    nlattr a;
    memcpy(&a, base + off, sizeof(a));
    if (a.nla_len < sizeof(nlattr) || off + a.nla_len > len)
      throw Error("sock_diag: malformed attribute");
    const uint8_t* p = base + off + NLA_HDRLEN;
    size_t plen = a.nla_len - NLA_HDRLEN;
    switch (a.nla_type & NLA_TYPE_MASK) {
      case UNIX_DIAG_NAME:
        u.has_name = true;
        u.name.assign(reinterpret_cast<const char*>(p), plen);
        break;
      case UNIX_DIAG_PEER:
        if (plen < 4) throw Error("sock_diag: short UNIX_DIAG_PEER");
        u.has_peer = true;
        u.peer = u32_at(p);
        break;
      case UNIX_DIAG_RQLEN:
        if (plen < sizeof(unix_diag_rqlen)) throw Error("sock_diag: short UNIX_DIAG_RQLEN");
        u.has_rqlen = true;
        u.rqueue = u32_at(p);
        u.wqueue = u32_at(p + 4);
        break;
      case UNIX_DIAG_ICONS:
        if (plen % 4) throw Error("sock_diag: bad UNIX_DIAG_ICONS length");
        for (size_t i = 0; i < plen; i += 4) u.icons.push_back(u32_at(p + i));
        break;
      case UNIX_DIAG_VFS:
        if (plen < sizeof(unix_diag_vfs)) throw Error("sock_diag: short UNIX_DIAG_VFS");
        u.has_vfs = true;
        u.vfs_ino = u32_at(p);
        u.vfs_dev = u32_at(p + 4);
        break;
      case UNIX_DIAG_SHUTDOWN:
        if (plen < 1) throw Error("sock_diag: short UNIX_DIAG_SHUTDOWN");
        u.shutdown = p[0];
        break;
      default:
        break;
    }
    off += NLA_ALIGN(a.nla_len);
  }
  out->push_back(std::move(u));
}

// Walks a buffer of netlink messages, handing each SOCK_DIAG_BY_FAMILY one
// (copied to aligned storage: the buffer need not be aligned) to one(h, len).
template <class One>
bool walk_replies(const void* buf, size_t len, One&& one) {
  auto* p = static_cast<const uint8_t*>(buf);
  size_t off = 0;
  while (off + sizeof(nlmsghdr) <= len) {
    nlmsghdr h;
    memcpy(&h, p + off, sizeof(h));
    if (h.nlmsg_len < sizeof(nlmsghdr) || off + h.nlmsg_len > len)
      throw Error("sock_diag: malformed netlink message");
    if (h.nlmsg_type == NLMSG_DONE) return true;
    if (h.nlmsg_type == NLMSG_ERROR) {
      int err = 0;
      if (h.nlmsg_len >= NLMSG_LENGTH(sizeof(nlmsgerr))) {
        nlmsgerr e;
        memcpy(&e, p + off + NLMSG_HDRLEN, sizeof(e));
        err = -e.error;
      }
      if (err == 0) return true;  // an ack
      throw_errno(err, "sock_diag");
    }
    if (h.nlmsg_type == SOCK_DIAG_BY_FAMILY) {
      std::vector<uint64_t> tmp((h.nlmsg_len + 7) / 8);
      memcpy(tmp.data(), p + off, h.nlmsg_len);
      one(reinterpret_cast<const nlmsghdr*>(tmp.data()), h.nlmsg_len);
    }
    off += NLMSG_ALIGN(h.nlmsg_len);
  }
  if (off != len) throw Error("sock_diag: trailing bytes in reply");
  return false;
}

void parse_inet_one(const nlmsghdr* h, size_t len, uint8_t protocol, std::vector<InetInfo>* out) {
  if (len < NLMSG_LENGTH(sizeof(inet_diag_msg))) throw Error("sock_diag: short inet_diag_msg");
  inet_diag_msg m;
  memcpy(&m, NLMSG_DATA(h), sizeof(m));
  InetInfo i;
  i.ino = m.idiag_inode;
  i.family = m.idiag_family;
  i.protocol = protocol;
  i.state = m.idiag_state;
  size_t alen;
  if (m.idiag_family == AF_INET)
    alen = 4;
  else if (m.idiag_family == AF_INET6)
    alen = 16;
  else
    throw Error(strfmt("sock_diag: inet reply of family %u", m.idiag_family));
  i.src.assign(reinterpret_cast<const char*>(m.id.idiag_src), alen);
  i.dst.assign(reinterpret_cast<const char*>(m.id.idiag_dst), alen);
  i.sport = ntohs(m.id.idiag_sport);
  i.dport = ntohs(m.id.idiag_dport);
  i.ifindex = m.id.idiag_if;
  i.rqueue = m.idiag_rqueue;
  i.wqueue = m.idiag_wqueue;
  auto* base = reinterpret_cast<const uint8_t*>(h);
  size_t off = NLMSG_ALIGN(NLMSG_LENGTH(sizeof(inet_diag_msg)));
  while (off + sizeof(nlattr) <= len) {
    nlattr a;
    memcpy(&a, base + off, sizeof(a));
    if (a.nla_len < sizeof(nlattr) || off + a.nla_len > len)
      throw Error("sock_diag: malformed attribute");
    const uint8_t* p = base + off + NLA_HDRLEN;
    size_t plen = a.nla_len - NLA_HDRLEN;
    switch (a.nla_type & NLA_TYPE_MASK) {
      case INET_DIAG_SHUTDOWN:
        if (plen < 1) throw Error("sock_diag: short INET_DIAG_SHUTDOWN");
        i.shutdown = p[0];
        break;
      case INET_DIAG_SKV6ONLY:
        if (plen < 1) throw Error("sock_diag: short INET_DIAG_SKV6ONLY");
        i.has_v6only = true;
        i.v6only = p[0] != 0;
        break;
      default:
        break;
    }
    off += NLA_ALIGN(a.nla_len);
  }
  out->push_back(std::move(i));
}

}  // namespace

bool parse_unix_replies(const void* buf, size_t len, std::vector<UnixInfo>* out) {
  return walk_replies(buf, len, [&](const nlmsghdr* h, size_t n) { parse_one(h, n, out); });
}

bool parse_inet_replies(const void* buf, size_t len, uint8_t protocol, std::vector<InetInfo>* out) {
  return walk_replies(buf, len,
                      [&](const nlmsghdr* h, size_t n) { parse_inet_one(h, n, protocol, out); });
}

SockDiag::SockDiag() {
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) throw_errno("socket(NETLINK_SOCK_DIAG)");
  fd_.reset(fd);
}

template <class Parse>
void SockDiag::request(const void* req, size_t len, Parse&& parse) {
  sockaddr_nl nl{};
  nl.nl_family = AF_NETLINK;
  if (retry_eintr([&] {
        return sendto(fd_.get(), req, len, 0, reinterpret_cast<sockaddr*>(&nl), sizeof(nl));
      }) < 0)
    throw_errno("sock_diag: send request");
  std::vector<uint64_t> buf(32768 / 8);
  for (;;) {
    ssize_t n = retry_eintr([&] { return recv(fd_.get(), buf.data(), buf.size() * 8, 0); });
    if (n < 0) throw_errno("sock_diag: receive reply");
    if (n == 0) throw Error("sock_diag: unexpected end of replies");
    if (parse(buf.data(), static_cast<size_t>(n))) break;
  }
}

std::vector<UnixInfo> SockDiag::dump_unix() {
  struct {
    nlmsghdr h;
    unix_diag_req r;
  } req{};
  req.h.nlmsg_len = sizeof(req);
  req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.h.nlmsg_seq = ++seq_;
  req.r.sdiag_family = AF_UNIX;
  req.r.udiag_states = ~0u;
  req.r.udiag_show =
      UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_ICONS | UDIAG_SHOW_VFS;
  std::vector<UnixInfo> out;
  request(&req, sizeof(req),
          [&](const void* b, size_t n) { return parse_unix_replies(b, n, &out); });
  return out;
}

std::vector<InetInfo> SockDiag::dump_inet(uint8_t family, uint8_t protocol) {
  struct {
    nlmsghdr h;
    inet_diag_req_v2 r;
  } req{};
  req.h.nlmsg_len = sizeof(req);
  req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.h.nlmsg_seq = ++seq_;
  req.r.sdiag_family = family;
  req.r.sdiag_protocol = protocol;
  req.r.idiag_states = ~0u;
  std::vector<InetInfo> out;
  request(&req, sizeof(req),
          [&](const void* b, size_t n) { return parse_inet_replies(b, n, protocol, &out); });
  return out;
}

}  // namespace ckpt::sockdiag
