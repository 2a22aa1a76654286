// Owners for libnl-route-3 objects (sockets, caches, links, addresses,
// routes, rules, neighbours, messages, addresses): each one is a
// unique_ptr with the matching free/put function, so a failed step never
// leaks one. A socket stays bound to the network namespace of the thread
// that connected it (see sys/netns_exec.h), whatever that thread does later.
#pragma once

#include <netlink/addr.h>
#include <netlink/cache.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>
#include <netlink/route/rule.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace ckpt::nl {

template <class T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const {
    if (p) Free(p);
  }
};

using Sock = std::unique_ptr<nl_sock, Deleter<nl_sock, nl_socket_free>>;
using Cache = std::unique_ptr<nl_cache, Deleter<nl_cache, nl_cache_free>>;
using Link = std::unique_ptr<rtnl_link, Deleter<rtnl_link, rtnl_link_put>>;
using Addr = std::unique_ptr<rtnl_addr, Deleter<rtnl_addr, rtnl_addr_put>>;
using Route = std::unique_ptr<rtnl_route, Deleter<rtnl_route, rtnl_route_put>>;
using Rule = std::unique_ptr<rtnl_rule, Deleter<rtnl_rule, rtnl_rule_put>>;
using Neigh = std::unique_ptr<rtnl_neigh, Deleter<rtnl_neigh, rtnl_neigh_put>>;
using NlAddr = std::unique_ptr<nl_addr, Deleter<nl_addr, nl_addr_put>>;
using Msg = std::unique_ptr<nl_msg, Deleter<nl_msg, nlmsg_free>>;
using Cb = std::unique_ptr<nl_cb, Deleter<nl_cb, nl_cb_put>>;
// A veth and its peer point at each other: this releases both.
using VethLink = std::unique_ptr<rtnl_link, Deleter<rtnl_link, rtnl_link_veth_release>>;

// Throws Error("what: <libnl message>") when err < 0; returns err otherwise.
int check(int err, const std::string& what);

// A NETLINK_ROUTE socket in the calling thread's network namespace.
Sock connect_route();

// Every object of a kind, as the kernel lists it now (family AF_UNSPEC: all).
Cache link_cache(nl_sock* sk);
Cache addr_cache(nl_sock* sk);
Cache route_cache(nl_sock* sk, int family);
Cache rule_cache(nl_sock* sk, int family);
Cache neigh_cache(nl_sock* sk);

// Raw messages, for objects whose every attribute must be kept (routes,
// rules, bridge options): libnl's objects drop attributes they do not know.
struct RawMsg {
  uint16_t type = 0;
  std::string payload;  // after the nlmsghdr: family header, then attributes
};
// Sends a dump request `type` with `hdr` as payload and collects every
// reply up to NLMSG_DONE.
std::vector<RawMsg> dump_raw(nl_sock* sk, int type, const void* hdr, size_t len);

// The kernel's answer to one request: errno (0: done) and its extended ack
// message, if it gave one.
struct Ack {
  int err = 0;
  std::string msg;
  std::string describe() const;  // "File exists (Nexthop has invalid gateway)"
};
// Sends one request (payload = family header + attributes) and waits for
// the kernel's acknowledgement.
Ack request(nl_sock* sk, int type, int flags, const std::string& payload);
// Throws Error("what (kernel's message): strerror") for a failed ack.
[[noreturn]] void throw_ack(const Ack& ack, const std::string& what);

// Iterates the attributes of a payload after a header of hdrlen bytes.
// f(type, data, len) for each; nested attribute flags are masked off.
template <class F>
void for_each_attr(const std::string& payload, size_t hdrlen, F&& f) {
  size_t off = NLMSG_ALIGN(hdrlen);
  while (off + NLA_HDRLEN <= payload.size()) {
    nlattr a;
    memcpy(&a, payload.data() + off, sizeof a);
    if (a.nla_len < NLA_HDRLEN || off + a.nla_len > payload.size()) break;
    f(static_cast<uint16_t>(a.nla_type & NLA_TYPE_MASK), payload.data() + off + NLA_HDRLEN,
      static_cast<size_t>(a.nla_len - NLA_HDRLEN));
    off += NLA_ALIGN(a.nla_len);
  }
}
// Appends one attribute to a payload being built.
void put_attr(std::string* payload, uint16_t type, const void* data, size_t len);

// An nl_addr from raw bytes (family AF_INET, AF_INET6 or AF_LLC for MACs).
NlAddr make_addr(int family, const std::string& bytes, unsigned prefixlen);
// The raw bytes of an nl_addr ("" for null).
std::string addr_bytes(nl_addr* a);

}  // namespace ckpt::nl
