#include "sys/sock_diag.h"

#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/socket.h>
#include <unistd.h>

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

}  // namespace

bool parse_unix_replies(const void* buf, size_t len, std::vector<UnixInfo>* out) {
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
      // Copy to aligned storage: the buffer need not be aligned.
      std::vector<uint64_t> tmp((h.nlmsg_len + 7) / 8);
      memcpy(tmp.data(), p + off, h.nlmsg_len);
      parse_one(reinterpret_cast<const nlmsghdr*>(tmp.data()), h.nlmsg_len, out);
    }
    off += NLMSG_ALIGN(h.nlmsg_len);
  }
  if (off != len) throw Error("sock_diag: trailing bytes in reply");
  return false;
}

SockDiag::SockDiag() {
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) throw_errno("socket(NETLINK_SOCK_DIAG)");
  fd_.reset(fd);
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
  sockaddr_nl nl{};
  nl.nl_family = AF_NETLINK;
  if (retry_eintr([&] {
        return sendto(fd_.get(), &req, sizeof(req), 0, reinterpret_cast<sockaddr*>(&nl),
                      sizeof(nl));
      }) < 0)
    throw_errno("sock_diag: send request");
  std::vector<UnixInfo> out;
  std::vector<uint64_t> buf(32768 / 8);
  for (;;) {
    ssize_t n = retry_eintr([&] { return recv(fd_.get(), buf.data(), buf.size() * 8, 0); });
    if (n < 0) throw_errno("sock_diag: receive reply");
    if (n == 0) throw Error("sock_diag: unexpected end of replies");
    if (parse_unix_replies(buf.data(), static_cast<size_t>(n), &out)) break;
  }
  return out;
}

}  // namespace ckpt::sockdiag
