#include "container/net.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>

#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/route.h>

#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"

namespace ckpt::container {

namespace {

// Owners for libnl objects.
struct NlFree {
  void operator()(nl_sock* p) const { nl_socket_free(p); }
  void operator()(rtnl_link* p) const { rtnl_link_put(p); }
  void operator()(nl_addr* p) const { nl_addr_put(p); }
  void operator()(rtnl_addr* p) const { rtnl_addr_put(p); }
  void operator()(rtnl_route* p) const { rtnl_route_put(p); }
};
template <class T>
using NlPtr = std::unique_ptr<T, NlFree>;

[[noreturn]] void throw_nl(int err, const std::string& what) {
  throw Error(what + ": " + nl_geterror(err));
}

NlPtr<nl_sock> route_socket() {
  NlPtr<nl_sock> sk(nl_socket_alloc());
  if (!sk) throw Error("netlink: out of memory");
  if (int err = nl_connect(sk.get(), NETLINK_ROUTE); err < 0) throw_nl(err, "netlink connect");
  return sk;
}

// A netlink socket of another network namespace: a socket belongs to the
// namespace it was created in, so the thread enters it only for the
// socket() call and comes straight back.
NlPtr<nl_sock> route_socket_in(int netns_fd) {
  UniqueFd home = open_or_throw("/proc/thread-self/ns/net", O_RDONLY);
  if (setns(netns_fd, CLONE_NEWNET) != 0) throw_errno("setns into the container's netns");
  NlPtr<nl_sock> sk;
  Error failure("");
  bool failed = false;
  try {
    sk = route_socket();
  } catch (const Error& e) {
    failure = e;
    failed = true;
  }
  if (setns(home.get(), CLONE_NEWNET) != 0) {
    // Carrying on in the wrong namespace would configure the wrong links.
    LOG_ERROR("cannot return to ckpt's network namespace: %s", strerror(errno));
    abort();
  }
  if (failed) throw failure;
  return sk;
}

NlPtr<rtnl_link> get_link(nl_sock* sk, const std::string& name) {
  rtnl_link* l = nullptr;
  if (int err = rtnl_link_get_kernel(sk, 0, name.c_str(), &l); err < 0)
    throw_nl(err, "link " + name);
  return NlPtr<rtnl_link>(l);
}

void set_up(nl_sock* sk, rtnl_link* link, int master = 0) {
  NlPtr<rtnl_link> change(rtnl_link_alloc());
  rtnl_link_set_flags(change.get(), IFF_UP);
  if (master) rtnl_link_set_master(change.get(), master);
  if (int err = rtnl_link_change(sk, link, change.get(), 0); err < 0)
    throw_nl(err, std::string("link ") + rtnl_link_get_name(link) + ": set up");
}

bool valid_ipv4(const std::string& s, bool with_prefix) {
  std::string addr = s;
  if (with_prefix) {
    size_t slash = s.find('/');
    if (slash == std::string::npos) return false;
    addr = s.substr(0, slash);
    std::string len = s.substr(slash + 1);
    char* end = nullptr;
    long n = strtol(len.c_str(), &end, 10);
    if (len.empty() || *end || n < 0 || n > 32) return false;
  }
  in_addr a;
  return inet_pton(AF_INET, addr.c_str(), &a) == 1;
}

}  // namespace

img::ContainerNet parse_net(const std::string& arg) {
  img::ContainerNet net;
  if (arg == "none" || arg == "host") {
    net.set_mode(arg);
    return net;
  }
  net.set_mode("bridge");
  size_t start = 0;
  while (start <= arg.size()) {
    size_t comma = arg.find(',', start);
    std::string kv = arg.substr(start, comma == std::string::npos ? comma : comma - start);
    size_t eq = kv.find('=');
    std::string k = kv.substr(0, eq), v = eq == std::string::npos ? "" : kv.substr(eq + 1);
    if (eq == std::string::npos || v.empty())
      throw UsageError("--net: '" + kv +
                       "' is not KEY=VALUE (none, host or bridge=BR,ip=A.B.C.D/N[,gw=G])");
    if (k == "bridge")
      net.set_bridge(v);
    else if (k == "ip")
      net.set_ip(v);
    else if (k == "gw")
      net.set_gw(v);
    else
      throw UsageError("--net: unknown key '" + k + "' (bridge, ip, gw)");
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (net.bridge().empty()) throw UsageError("--net: bridge=BR is required (or none, host)");
  if (net.bridge().size() >= IFNAMSIZ) throw UsageError("--net: bridge name too long");
  if (!valid_ipv4(net.ip(), true))
    throw UsageError("--net: ip=A.B.C.D/N is required (got '" + net.ip() + "')");
  if (!net.gw().empty() && !valid_ipv4(net.gw(), false))
    throw UsageError("--net: gw must be an IPv4 address (got '" + net.gw() + "')");
  return net;
}

std::string host_ifname_for(const std::string& name) {
  std::string simple = "ck-" + name;
  if (simple.size() < IFNAMSIZ) return simple;
  uint32_t h = 2166136261u;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 16777619u;
  return strfmt("ck-%s-%07x", name.substr(0, 4).c_str(), h & 0xfffffff);
}

void attach_veth_host_end(img::ContainerNet* net, int netns_fd) {
  const std::string host = net->host_ifname();
  if (net->container_ifname().empty()) net->set_container_ifname("eth0");
  const std::string inside = net->container_ifname();
  in_context("veth " + host + " (bridge " + net->bridge() + ")", [&] {
    if (host.empty() || host.size() >= IFNAMSIZ) throw Error("bad host interface name");
    NlPtr<nl_sock> sk = route_socket();
    NlPtr<rtnl_link> br = get_link(sk.get(), net->bridge());
    if (!rtnl_link_is_bridge(br.get())) throw Error(net->bridge() + " is not a bridge");

    NlPtr<rtnl_link> veth(rtnl_link_veth_alloc());
    if (!veth) throw Error("out of memory");
    rtnl_link_set_name(veth.get(), host.c_str());
    rtnl_link* peer = rtnl_link_veth_get_peer(veth.get());
    rtnl_link_set_name(peer, inside.c_str());
    // Made in the container's namespace right away: its name cannot clash
    // with a host link, and it is never visible on the host.
    rtnl_link_set_ns_fd(peer, netns_fd);
    if (!net->mac().empty()) {
      nl_addr* a = nullptr;
      if (int err = nl_addr_parse(net->mac().c_str(), AF_LLC, &a); err < 0)
        throw_nl(err, "MAC " + net->mac());
      NlPtr<nl_addr> mac(a);
      rtnl_link_set_addr(peer, mac.get());
    }
    rtnl_link_put(peer);
    if (int err = rtnl_link_add(sk.get(), veth.get(), NLM_F_CREATE | NLM_F_EXCL); err < 0)
      throw_nl(err, "create veth pair with " + inside + " in the container");

    try {
      NlPtr<rtnl_link> link = get_link(sk.get(), host);
      set_up(sk.get(), link.get(), rtnl_link_get_ifindex(br.get()));
      NlPtr<nl_sock> in = route_socket_in(netns_fd);
      NlPtr<rtnl_link> end = get_link(in.get(), inside);
      char buf[64];
      if (nl_addr* a = rtnl_link_get_addr(end.get())) net->set_mac(nl_addr2str(a, buf, sizeof buf));
    } catch (...) {
      remove_host_veth(host);
      throw;
    }
    LOG_DEBUG("veth %s on %s, %s (%s) in the container", host.c_str(), net->bridge().c_str(),
              inside.c_str(), net->mac().c_str());
  });
}

void configure_container_net(const img::ContainerNet& net, int netns_fd) {
  const std::string& ifname = net.container_ifname().empty() ? "eth0" : net.container_ifname();
  in_context("container " + ifname, [&] {
    NlPtr<nl_sock> sk = route_socket_in(netns_fd);
    NlPtr<rtnl_link> lo = get_link(sk.get(), "lo");
    set_up(sk.get(), lo.get());
    NlPtr<rtnl_link> link = get_link(sk.get(), ifname);
    set_up(sk.get(), link.get());
    int ifindex = rtnl_link_get_ifindex(link.get());

    nl_addr* a = nullptr;
    if (int err = nl_addr_parse(net.ip().c_str(), AF_INET, &a); err < 0)
      throw_nl(err, "address " + net.ip());
    NlPtr<nl_addr> local(a);
    NlPtr<rtnl_addr> addr(rtnl_addr_alloc());
    rtnl_addr_set_ifindex(addr.get(), ifindex);
    rtnl_addr_set_local(addr.get(), local.get());
    rtnl_addr_set_prefixlen(addr.get(), nl_addr_get_prefixlen(local.get()));
    if (int err = rtnl_addr_add(sk.get(), addr.get(), 0); err < 0)
      throw_nl(err, "add address " + net.ip());

    if (net.gw().empty()) return;
    nl_addr* d = nullptr;
    nl_addr* g = nullptr;
    if (int err = nl_addr_parse("default", AF_INET, &d); err < 0) throw_nl(err, "default route");
    NlPtr<nl_addr> dst(d);
    if (int err = nl_addr_parse(net.gw().c_str(), AF_INET, &g); err < 0)
      throw_nl(err, "gateway " + net.gw());
    NlPtr<nl_addr> gw(g);
    NlPtr<rtnl_route> route(rtnl_route_alloc());
    rtnl_route_set_family(route.get(), AF_INET);
    rtnl_route_set_dst(route.get(), dst.get());
    rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
    rtnl_route_set_protocol(route.get(), RTPROT_BOOT);
    rtnl_route_set_scope(route.get(), RT_SCOPE_UNIVERSE);
    rtnl_route_set_type(route.get(), RTN_UNICAST);
    rtnl_nexthop* nh = rtnl_route_nh_alloc();  // owned by the route once added
    rtnl_route_nh_set_gateway(nh, gw.get());
    rtnl_route_nh_set_ifindex(nh, ifindex);
    rtnl_route_add_nexthop(route.get(), nh);
    if (int err = rtnl_route_add(sk.get(), route.get(), NLM_F_CREATE); err < 0)
      throw_nl(err, "default route via " + net.gw());
  });
}

bool remove_host_veth(const std::string& host_ifname) {
  NlPtr<nl_sock> sk = route_socket();
  NlPtr<rtnl_link> link(rtnl_link_alloc());
  rtnl_link_set_name(link.get(), host_ifname.c_str());
  int err = rtnl_link_delete(sk.get(), link.get());
  if (err == -NLE_NODEV || err == -NLE_OBJ_NOTFOUND) return false;
  if (err < 0) throw_nl(err, "delete link " + host_ifname);
  return true;
}

bool link_exists(const std::string& ifname) {
  NlPtr<nl_sock> sk = route_socket();
  rtnl_link* l = nullptr;
  int err = rtnl_link_get_kernel(sk.get(), 0, ifname.c_str(), &l);
  if (l) rtnl_link_put(l);
  if (err == -NLE_NODEV || err == -NLE_OBJ_NOTFOUND) return false;
  if (err < 0) throw_nl(err, "link " + ifname);
  return true;
}

}  // namespace ckpt::container
