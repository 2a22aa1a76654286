#include "sys/netlink.h"

#include <linux/netlink.h>
#include <netlink/errno.h>
#include <sys/socket.h>

#include <cstdlib>
#include <cstring>

#include "sys/error.h"

namespace ckpt::nl {

int check(int err, const std::string& what) {
  if (err < 0) throw Error(what + ": " + nl_geterror(err));
  return err;
}

Sock connect_route() {
  Sock sk(nl_socket_alloc());
  if (!sk) throw Error("nl_socket_alloc: out of memory");
  check(nl_connect(sk.get(), NETLINK_ROUTE), "connect NETLINK_ROUTE");
  // request() reads its acks itself, so libnl's count of expected sequence
  // numbers does not follow; every exchange is one request, one answer.
  nl_socket_disable_seq_check(sk.get());
  // The kernel then says why it refused a request, not only an errno.
  int one = 1;
  setsockopt(nl_socket_get_fd(sk.get()), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
  return sk;
}

namespace {
template <class F>
Cache fill(const char* what, F&& alloc) {
  nl_cache* c = nullptr;
  check(alloc(&c), std::string("list ") + what);
  return Cache(c);
}
}  // namespace

Cache link_cache(nl_sock* sk) {
  return fill("links", [&](nl_cache** c) { return rtnl_link_alloc_cache(sk, AF_UNSPEC, c); });
}
Cache addr_cache(nl_sock* sk) {
  return fill("addresses", [&](nl_cache** c) { return rtnl_addr_alloc_cache(sk, c); });
}
Cache route_cache(nl_sock* sk, int family) {
  return fill("routes", [&](nl_cache** c) { return rtnl_route_alloc_cache(sk, family, 0, c); });
}
Cache rule_cache(nl_sock* sk, int family) {
  return fill("rules", [&](nl_cache** c) { return rtnl_rule_alloc_cache(sk, family, c); });
}
Cache neigh_cache(nl_sock* sk) {
  return fill("neighbours", [&](nl_cache** c) { return rtnl_neigh_alloc_cache(sk, c); });
}

NlAddr make_addr(int family, const std::string& bytes, unsigned prefixlen) {
  NlAddr a(nl_addr_build(family, bytes.data(), bytes.size()));
  if (!a) throw Error("nl_addr_build: out of memory");
  nl_addr_set_prefixlen(a.get(), static_cast<int>(prefixlen));
  return a;
}

std::string addr_bytes(nl_addr* a) {
  if (!a) return {};
  return std::string(static_cast<const char*>(nl_addr_get_binary_addr(a)), nl_addr_get_len(a));
}

}  // namespace ckpt::nl

namespace ckpt::nl {

namespace {
int collect(nl_msg* m, void* arg) {
  auto* out = static_cast<std::vector<RawMsg>*>(arg);
  nlmsghdr* h = nlmsg_hdr(m);
  RawMsg r;
  r.type = h->nlmsg_type;
  r.payload.assign(static_cast<const char*>(nlmsg_data(h)), static_cast<size_t>(nlmsg_datalen(h)));
  out->push_back(std::move(r));
  return NL_OK;
}
}  // namespace

std::vector<RawMsg> dump_raw(nl_sock* sk, int type, const void* hdr, size_t len) {
  check(nl_send_simple(sk, type, NLM_F_DUMP, const_cast<void*>(hdr), len), "netlink send");
  Cb cb(nl_cb_clone(nl_socket_get_cb(sk)));
  if (!cb) throw Error("nl_cb_clone: out of memory");
  std::vector<RawMsg> out;
  nl_cb_set(cb.get(), NL_CB_VALID, NL_CB_CUSTOM, collect, &out);
  check(nl_recvmsgs(sk, cb.get()), "netlink receive");
  return out;
}

std::string Ack::describe() const {
  std::string s = strerror(err);
  if (!msg.empty()) s += " (" + msg + ")";
  return s;
}

Ack request(nl_sock* sk, int type, int flags, const std::string& payload) {
  Msg m(nlmsg_alloc_simple(type, flags | NLM_F_REQUEST | NLM_F_ACK));
  if (!m) throw Error("nlmsg_alloc: out of memory");
  check(nlmsg_append(m.get(), const_cast<char*>(payload.data()), payload.size(), NLMSG_ALIGNTO),
        "netlink message");
  check(nl_send_auto(sk, m.get()), "netlink send");
  // The reply is read here rather than by nl_wait_for_ack so that the errno
  // and the kernel's extended ack text are kept.
  for (;;) {
    sockaddr_nl peer{};
    unsigned char* buf = nullptr;
    int n = nl_recv(sk, &peer, &buf, nullptr);
    if (n <= 0) {
      free(buf);
      check(n == 0 ? -NLE_MSG_TRUNC : n, "netlink receive");
    }
    std::unique_ptr<unsigned char, decltype(&free)> own(buf, free);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); nlmsg_ok(h, n); h = nlmsg_next(h, &n)) {
      if (h->nlmsg_type != NLMSG_ERROR) continue;
      Ack ack;
      auto* e = static_cast<nlmsgerr*>(nlmsg_data(h));
      ack.err = -e->error;
      // Extended ack attributes follow the echoed request (its header only
      // when NLM_F_CAPPED is set).
      if (h->nlmsg_flags & NLM_F_ACK_TLVS) {
        size_t off = sizeof(nlmsgerr);
        if (!(h->nlmsg_flags & NLM_F_CAPPED)) off += e->msg.nlmsg_len - sizeof(nlmsghdr);
        off = NLMSG_ALIGN(off);
        std::string rest(static_cast<const char*>(nlmsg_data(h)),
                         static_cast<size_t>(nlmsg_datalen(h)));
        if (off <= rest.size()) {
          for_each_attr(rest.substr(off), 0, [&](uint16_t t, const char* d, size_t len) {
            if (t == NLMSGERR_ATTR_MSG) ack.msg.assign(d, strnlen(d, len));
          });
        }
      }
      return ack;
    }
  }
}

void throw_ack(const Ack& ack, const std::string& what) {
  throw Error(ack.msg.empty() ? what : what + " (" + ack.msg + ")", ack.err);
}

void put_attr(std::string* payload, uint16_t type, const void* data, size_t len) {
  payload->resize(NLMSG_ALIGN(payload->size()));
  nlattr a{};
  a.nla_len = static_cast<uint16_t>(NLA_HDRLEN + len);
  a.nla_type = type;
  payload->append(reinterpret_cast<const char*>(&a), sizeof a);
  payload->append(static_cast<const char*>(data), len);
  payload->resize(NLMSG_ALIGN(payload->size()));
}

}  // namespace ckpt::nl
