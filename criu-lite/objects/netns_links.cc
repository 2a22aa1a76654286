// Links and addresses of a network namespace (objects/netns.h).
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <netlink/route/link/inet6.h>
#include <netlink/route/link/veth.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "objects/netns_parts.h"
#include "sys/error.h"
#include "sys/log.h"

namespace ckpt::netns {

namespace {

// Interface flags a user sets; the others (RUNNING, LOWER_UP, ...) are state.
constexpr unsigned kUserFlags = IFF_UP | IFF_NOARP | IFF_PROMISC | IFF_ALLMULTI | IFF_MULTICAST |
                                IFF_DEBUG | IFF_DYNAMIC | IFF_AUTOMEDIA | IFF_PORTSEL |
                                IFF_NOTRAILERS;
// Address flags a user sets; SECONDARY, TENTATIVE, DADFAILED, DEPRECATED and
// PERMANENT are the kernel's.
constexpr unsigned kUserAddrFlags = IFA_F_NODAD | IFA_F_OPTIMISTIC | IFA_F_HOMEADDRESS |
                                    IFA_F_MANAGETEMPADDR | IFA_F_NOPREFIXROUTE | IFA_F_MCAUTOJOIN;
constexpr uint32_t kForever = 0xffffffff;

// Bridge options a bridge can be created with (the others are its state:
// timers, root and bridge ids, topology changes).
bool settable_bridge_option(uint16_t t) {
  switch (t) {
    case IFLA_BR_FORWARD_DELAY:
    case IFLA_BR_HELLO_TIME:
    case IFLA_BR_MAX_AGE:
    case IFLA_BR_AGEING_TIME:
    case IFLA_BR_STP_STATE:
    case IFLA_BR_PRIORITY:
    case IFLA_BR_VLAN_FILTERING:
    case IFLA_BR_VLAN_PROTOCOL:
    case IFLA_BR_GROUP_FWD_MASK:
    case IFLA_BR_GROUP_ADDR:
    case IFLA_BR_MCAST_ROUTER:
    case IFLA_BR_MCAST_SNOOPING:
    case IFLA_BR_MCAST_QUERY_USE_IFADDR:
    case IFLA_BR_MCAST_QUERIER:
    case IFLA_BR_MCAST_HASH_MAX:
    case IFLA_BR_MCAST_LAST_MEMBER_CNT:
    case IFLA_BR_MCAST_STARTUP_QUERY_CNT:
    case IFLA_BR_MCAST_LAST_MEMBER_INTVL:
    case IFLA_BR_MCAST_MEMBERSHIP_INTVL:
    case IFLA_BR_MCAST_QUERIER_INTVL:
    case IFLA_BR_MCAST_QUERY_INTVL:
    case IFLA_BR_MCAST_QUERY_RESPONSE_INTVL:
    case IFLA_BR_MCAST_STARTUP_QUERY_INTVL:
    case IFLA_BR_NF_CALL_IPTABLES:
    case IFLA_BR_NF_CALL_IP6TABLES:
    case IFLA_BR_NF_CALL_ARPTABLES:
    case IFLA_BR_VLAN_DEFAULT_PVID:
    case IFLA_BR_VLAN_STATS_ENABLED:
    case IFLA_BR_MCAST_STATS_ENABLED:
    case IFLA_BR_MCAST_IGMP_VERSION:
    case IFLA_BR_MCAST_MLD_VERSION:
    case IFLA_BR_VLAN_STATS_PER_PORT:
    case IFLA_BR_MULTI_BOOLOPT:
      return true;
    default:
      return false;
  }
}

// ifindex -> the IFLA_INFO_DATA options of every bridge, from a raw dump
// (libnl-route 3.7 has no bridge options).
std::map<int, std::vector<std::pair<uint16_t, std::string>>> bridge_options(nl_sock* sk) {
  std::map<int, std::vector<std::pair<uint16_t, std::string>>> out;
  ifinfomsg req{};
  req.ifi_family = AF_UNSPEC;
  for (const auto& m : nl::dump_raw(sk, RTM_GETLINK, &req, sizeof req)) {
    if (m.type != RTM_NEWLINK || m.payload.size() < sizeof(ifinfomsg)) continue;
    ifinfomsg ifi;
    memcpy(&ifi, m.payload.data(), sizeof ifi);
    std::string kind, data;
    nl::for_each_attr(m.payload, sizeof ifi, [&](uint16_t t, const char* d, size_t len) {
      if (t != IFLA_LINKINFO) return;
      nl::for_each_attr(std::string(d, len), 0, [&](uint16_t it, const char* id, size_t ilen) {
        if (it == IFLA_INFO_KIND) kind.assign(id, strnlen(id, ilen));
        if (it == IFLA_INFO_DATA) data.assign(id, ilen);
      });
    });
    if (kind != "bridge") continue;
    auto& opts = out[ifi.ifi_index];
    nl::for_each_attr(data, 0, [&](uint16_t t, const char* d, size_t len) {
      if (settable_bridge_option(t)) opts.emplace_back(t, std::string(d, len));
    });
  }
  return out;
}

// Sets the saved options that differ from those of the bridge just made,
// one request each so that a refusal names the option (some exist only
// with kernel options: VLAN filtering, multicast snooping).
void set_bridge_options(nl_sock* sk, const img::Link& l) {
  if (l.bridge().empty()) return;
  auto now = bridge_options(sk)[static_cast<int>(l.ifindex())];
  for (const auto& o : l.bridge()) {
    auto same = std::find(now.begin(), now.end(),
                          std::make_pair(static_cast<uint16_t>(o.type()), o.value()));
    if (same != now.end()) continue;
    std::string data;
    nl::put_attr(&data, static_cast<uint16_t>(o.type()), o.value().data(), o.value().size());
    std::string info;
    nl::put_attr(&info, IFLA_INFO_KIND, "bridge", 6);
    nl::put_attr(&info, IFLA_INFO_DATA | NLA_F_NESTED, data.data(), data.size());
    ifinfomsg ifi{};
    ifi.ifi_family = AF_UNSPEC;
    ifi.ifi_index = static_cast<int>(l.ifindex());
    std::string payload(reinterpret_cast<const char*>(&ifi), sizeof ifi);
    nl::put_attr(&payload, IFLA_LINKINFO | NLA_F_NESTED, info.data(), info.size());
    nl::Ack ack = nl::request(sk, RTM_NEWLINK, 0, payload);
    if (ack.err) nl::throw_ack(ack, strfmt("set bridge option %u (IFLA_BR_*)", o.type()));
  }
}

std::string link_name(nl_cache* links, int ifindex) {
  char buf[IFNAMSIZ + 1] = {};
  if (!rtnl_link_i2name(links, ifindex, buf, sizeof buf))
    throw Error(strfmt("no link with ifindex %d", ifindex));
  return buf;
}

// name -> ifindex of the dumped links: they keep their ifindexes.
std::map<std::string, int> ifindexes(const img::NetNs& ns) {
  std::map<std::string, int> m;
  for (const auto& l : ns.links()) m[l.name()] = static_cast<int>(l.ifindex());
  return m;
}

int ifindex_of(const std::map<std::string, int>& m, const std::string& name) {
  auto it = m.find(name);
  if (it == m.end()) throw Error("no saved link named " + name);
  return it->second;
}

// A change request for link ifindex: orig names the link, the caller fills
// change.
void change_link(nl_sock* sk, int ifindex, rtnl_link* change, const std::string& what) {
  nl::Link orig(rtnl_link_alloc());
  if (!orig) throw Error("rtnl_link_alloc: out of memory");
  rtnl_link_set_ifindex(orig.get(), ifindex);
  nl::check(rtnl_link_change(sk, orig.get(), change, 0), what);
}

nl::Link alloc_link() {
  nl::Link l(rtnl_link_alloc());
  if (!l) throw Error("rtnl_link_alloc: out of memory");
  return l;
}

// The settings every kind takes at creation (and the builtin links as a
// change): everything but the up flag, which comes last.
// The MAC the restore gives a veth's host end: the dumped one with its last
// bit flipped. Nothing in the container sees it, and during a migration the
// source's end still exists on the same L2 segment: two ports with one MAC
// would make the bridges drop each other's frames. Flipping it again on the
// way back keeps the two ends of any migration apart, and the restore can
// still tell the link it made (remove_host_veths).
std::string host_peer_mac(const img::Link& d) {
  std::string mac = d.peer().mac();
  if (!mac.empty()) mac.back() = static_cast<char>(mac.back() ^ 1);
  return mac;
}

void fill_common(rtnl_link* l, const img::Link& d, bool with_mac) {
  if (with_mac && !d.mac().empty()) rtnl_link_set_addr(l, nl::make_addr(AF_LLC, d.mac(), 0).get());
  if (with_mac && !d.broadcast().empty())
    rtnl_link_set_broadcast(l, nl::make_addr(AF_LLC, d.broadcast(), 0).get());
  if (d.mtu()) rtnl_link_set_mtu(l, d.mtu());
  rtnl_link_set_txqlen(l, d.txqlen());
  if (d.group()) rtnl_link_set_group(l, d.group());
  unsigned want = d.flags() & kUserFlags & ~IFF_UP;
  rtnl_link_set_flags(l, want);
  rtnl_link_unset_flags(l, kUserFlags & ~IFF_UP & ~want);
}

}  // namespace

std::map<std::string, std::string> list_link_kinds(nl_sock* sk) {
  std::map<std::string, std::string> out;
  nl::Cache links = nl::link_cache(sk);
  for (nl_object* o = nl_cache_get_first(links.get()); o; o = nl_cache_get_next(o)) {
    auto* l = reinterpret_cast<rtnl_link*>(o);
    const char* kind = rtnl_link_get_type(l);
    out[rtnl_link_get_name(l)] = kind ? kind : "";
  }
  return out;
}

std::vector<VethRef> dump_links(nl_sock* sk, const std::map<std::string, std::string>& fresh_links,
                                img::NetNs* ns) {
  std::vector<VethRef> veths;
  nl::Cache links = nl::link_cache(sk);
  std::map<int, std::vector<std::pair<uint16_t, std::string>>> bridges;
  bool bridges_read = false;
  for (nl_object* o = nl_cache_get_first(links.get()); o; o = nl_cache_get_next(o)) {
    auto* l = reinterpret_cast<rtnl_link*>(o);
    img::Link* d = ns->add_links();
    d->set_ifindex(static_cast<uint32_t>(rtnl_link_get_ifindex(l)));
    d->set_name(rtnl_link_get_name(l));
    in_context("link " + d->name(), [&] {
      const char* kind = rtnl_link_get_type(l);
      d->set_kind(kind ? kind : "");
      d->set_mac(nl::addr_bytes(rtnl_link_get_addr(l)));
      d->set_broadcast(nl::addr_bytes(rtnl_link_get_broadcast(l)));
      d->set_mtu(rtnl_link_get_mtu(l));
      d->set_flags(rtnl_link_get_flags(l) & kUserFlags);
      d->set_txqlen(rtnl_link_get_txqlen(l));
      d->set_num_tx_queues(rtnl_link_get_num_tx_queues(l));
      d->set_num_rx_queues(rtnl_link_get_num_rx_queues(l));
      d->set_group(rtnl_link_get_group(l));
      if (const char* alias = rtnl_link_get_ifalias(l)) d->set_alias(alias);
      if (int master = rtnl_link_get_master(l)) d->set_master(link_name(links.get(), master));
      uint8_t mode = 0;
      d->set_addr_gen_mode(rtnl_link_inet6_get_addr_gen_mode(l, &mode) == 0 ? mode : -1);

      auto fresh = fresh_links.find(d->name());
      if ((rtnl_link_get_flags(l) & IFF_LOOPBACK) ||
          (fresh != fresh_links.end() && fresh->second == d->kind())) {
        // lo, and the fallback tunnels (sit0, ...) a loaded module adds to
        // every namespace.
        d->set_builtin(true);
      } else if (d->kind() == "veth") {
        int32_t nsid = -1;
        if (rtnl_link_get_link_netnsid(l, &nsid) != 0 || nsid < 0)
          throw Error("a veth with both ends inside the namespace is not supported");
        veths.push_back({ns->links_size() - 1, rtnl_link_get_link(l)});
      } else if (d->kind() == "bridge") {
        if (!bridges_read) bridges = bridge_options(sk), bridges_read = true;
        for (const auto& [t, v] : bridges[rtnl_link_get_ifindex(l)]) {
          img::BridgeOption* b = d->add_bridge();
          b->set_type(t);
          b->set_value(v);
        }
      } else if (d->kind() != "dummy") {
        throw Error(strfmt("link kind '%s' is not supported (lo, veth, dummy and bridge are)",
                           d->kind().empty() ? "(none)" : d->kind().c_str()));
      }
    });
  }
  return veths;
}

void dump_veth_peers(nl_sock* host_sk, const std::vector<VethRef>& veths, img::NetNs* ns) {
  if (veths.empty()) return;
  nl::Cache links = nl::link_cache(host_sk);
  for (const VethRef& v : veths) {
    img::Link* d = ns->mutable_links(v.link);
    in_context("veth " + d->name(), [&] {
      // The peer is ours if it is a veth pointing back at this end from
      // another namespace.
      rtnl_link* p = rtnl_link_get(links.get(), v.peer_ifindex);
      nl::Link own(p);
      int32_t nsid = -1;
      if (!p || !rtnl_link_is_veth(p) || rtnl_link_get_link(p) != static_cast<int>(d->ifindex()) ||
          rtnl_link_get_link_netnsid(p, &nsid) != 0 || nsid < 0)
        throw Error(
            strfmt("its peer (ifindex %d) is not in ckpt's network namespace", v.peer_ifindex));
      img::VethPeer* peer = d->mutable_peer();
      peer->set_name(rtnl_link_get_name(p));
      peer->set_mac(nl::addr_bytes(rtnl_link_get_addr(p)));
      peer->set_mtu(rtnl_link_get_mtu(p));
      peer->set_up(rtnl_link_get_flags(p) & IFF_UP);
      peer->set_txqlen(rtnl_link_get_txqlen(p));
      if (int master = rtnl_link_get_master(p)) peer->set_master(link_name(links.get(), master));
    });
  }
}

void dump_addresses(nl_sock* sk, img::NetNs* ns) {
  // A raw dump: libnl's address cache merges IPv4 addresses of one subnet
  // (a secondary address would be lost).
  std::map<int, std::string> names;
  for (const auto& l : ns->links()) names[static_cast<int>(l.ifindex())] = l.name();
  for (int family : {AF_INET, AF_INET6}) {
    ifaddrmsg req{};
    req.ifa_family = static_cast<uint8_t>(family);
    for (const auto& m : nl::dump_raw(sk, RTM_GETADDR, &req, sizeof req)) {
      if (m.type != RTM_NEWADDR || m.payload.size() < sizeof(ifaddrmsg)) continue;
      ifaddrmsg h;
      memcpy(&h, m.payload.data(), sizeof h);
      if (h.ifa_family != family) continue;
      std::string address, local, label, broadcast;
      uint32_t flags = h.ifa_flags;
      ifa_cacheinfo ci{kForever, kForever, 0, 0};
      nl::for_each_attr(m.payload, sizeof h, [&](uint16_t t, const char* d, size_t len) {
        std::string v(d, len);
        if (t == IFA_ADDRESS) address = v;
        if (t == IFA_LOCAL) local = v;
        if (t == IFA_LABEL) label.assign(d, strnlen(d, len));
        if (t == IFA_BROADCAST) broadcast = v;
        if (t == IFA_FLAGS && len >= 4) memcpy(&flags, d, 4);
        if (t == IFA_CACHEINFO && len >= sizeof ci) memcpy(&ci, d, sizeof ci);
      });
      // Temporary (privacy) addresses are the kernel's to make again. (The
      // same bit means "secondary" for IPv4.)
      if (family == AF_INET6 && (flags & IFA_F_TEMPORARY)) continue;
      auto dev = names.find(static_cast<int>(h.ifa_index));
      if (dev == names.end()) continue;
      img::Address* d = ns->add_addresses();
      d->set_family(static_cast<uint32_t>(family));
      d->set_dev(dev->second);
      // IFA_LOCAL is the address and IFA_ADDRESS the peer when both are
      // there (point-to-point); else IFA_ADDRESS is the address.
      if (!local.empty()) {
        d->set_local(local);
        if (address != local) d->set_peer(address);
      } else {
        d->set_local(address);
      }
      d->set_prefixlen(h.ifa_prefixlen);
      d->set_scope(h.ifa_scope);
      d->set_flags(flags & kUserAddrFlags);
      d->set_label(label);
      d->set_broadcast(broadcast);
      d->set_valid_lft(ci.ifa_valid);
      d->set_preferred_lft(ci.ifa_prefered);
    }
  }
}

std::string host_name(const img::Link& l, const NetRestoreOptions& opts) {
  return opts.host_ifname.empty() ? l.peer().name() : opts.host_ifname;
}

void check_restore(nl_sock* sk, nl_sock* host_sk, const img::NetNs& ns,
                   const NetRestoreOptions& opts) {
  std::map<std::string, const img::Link*> builtin;
  int veths = 0;
  for (const auto& l : ns.links()) {
    if (l.builtin()) builtin[l.name()] = &l;
    if (l.kind() == "veth" && !l.builtin()) ++veths;
  }
  for (const auto& [name, kind] : list_link_kinds(sk)) {
    auto it = builtin.find(name);
    if (it == builtin.end() || it->second->kind() != kind)
      throw Error("the namespace to restore into is not fresh: it has link " + name);
  }
  if (!opts.host_ifname.empty() && veths != 1)
    throw UsageError(
        strfmt("a host-side veth name is given but the namespace has %d veths", veths));
  nl::Cache host = nl::link_cache(host_sk);
  for (const auto& l : ns.links()) {
    if (l.kind() != "veth" || l.builtin()) continue;
    std::string name = host_name(l, opts);
    if (rtnl_link_name2i(host.get(), name.c_str()) != 0)
      throw Error(
          strfmt("veth %s: the host-side name %s is taken here", l.name().c_str(), name.c_str()));
  }
  if (!opts.bridge.empty()) {
    nl::Link br(rtnl_link_get_by_name(host.get(), opts.bridge.c_str()));
    if (!br) throw Error("bridge " + opts.bridge + " does not exist here");
    const char* kind = rtnl_link_get_type(br.get());
    if (!kind || strcmp(kind, "bridge") != 0) throw Error(opts.bridge + " is not a bridge");
  }
}

void create_links(nl_sock* sk, int host_ns_fd, const img::NetNs& ns, const NetRestoreOptions& opts,
                  std::vector<std::string>* created) {
  for (const auto& d : ns.links()) {
    in_context("link " + d.name(), [&] {
      const int index = static_cast<int>(d.ifindex());
      if (d.builtin()) {
        nl::Link change = alloc_link();
        fill_common(change.get(), d, !(d.flags() & IFF_LOOPBACK) && d.name() != "lo");
        change_link(sk, index, change.get(), "configure");
        return;
      }
      if (d.kind() == "veth") {
        nl::VethLink l(rtnl_link_veth_alloc());
        if (!l) throw Error("rtnl_link_veth_alloc: out of memory");
        rtnl_link_set_name(l.get(), d.name().c_str());
        rtnl_link_set_ifindex(l.get(), index);
        fill_common(l.get(), d, true);
        if (d.num_tx_queues()) rtnl_link_set_num_tx_queues(l.get(), d.num_tx_queues());
        if (d.num_rx_queues()) rtnl_link_set_num_rx_queues(l.get(), d.num_rx_queues());
        // The peer is created straight into the caller's namespace.
        nl::Link peer(rtnl_link_veth_get_peer(l.get()));
        std::string name = host_name(d, opts);
        rtnl_link_set_name(peer.get(), name.c_str());
        if (!d.peer().mac().empty())
          rtnl_link_set_addr(peer.get(), nl::make_addr(AF_LLC, host_peer_mac(d), 0).get());
        if (d.peer().mtu()) rtnl_link_set_mtu(peer.get(), d.peer().mtu());
        rtnl_link_set_txqlen(peer.get(), d.peer().txqlen());
        rtnl_link_set_ns_fd(peer.get(), host_ns_fd);
        nl::check(rtnl_link_add(sk, l.get(), NLM_F_CREATE | NLM_F_EXCL), "create veth");
        created->push_back(name);
        return;
      }
      nl::Link l = alloc_link();
      nl::check(rtnl_link_set_type(l.get(), d.kind().c_str()), "link type " + d.kind());
      rtnl_link_set_name(l.get(), d.name().c_str());
      rtnl_link_set_ifindex(l.get(), index);
      fill_common(l.get(), d, true);
      if (d.num_tx_queues()) rtnl_link_set_num_tx_queues(l.get(), d.num_tx_queues());
      if (d.num_rx_queues()) rtnl_link_set_num_rx_queues(l.get(), d.num_rx_queues());
      nl::check(rtnl_link_add(sk, l.get(), NLM_F_CREATE | NLM_F_EXCL), "create " + d.kind());
      if (d.kind() == "bridge") set_bridge_options(sk, d);
    });
  }
  std::map<std::string, int> index = ifindexes(ns);
  for (const auto& d : ns.links()) {
    in_context("link " + d.name(), [&] {
      // The kernel takes an alias only in a change, not at creation.
      if (!d.alias().empty()) {
        nl::Link change = alloc_link();
        rtnl_link_set_ifalias(change.get(), d.alias().c_str());
        change_link(sk, static_cast<int>(d.ifindex()), change.get(), "set alias");
      }
      if (!d.master().empty()) {
        nl::Link change = alloc_link();
        rtnl_link_set_master(change.get(), ifindex_of(index, d.master()));
        change_link(sk, static_cast<int>(d.ifindex()), change.get(), "enslave to " + d.master());
      }
      // Off until every address is back, so that the kernel does not add
      // a link-local address of its own next to the saved one when the
      // link goes up (finish_links sets the saved mode).
      if (d.addr_gen_mode() >= 0) {
        nl::Link change = alloc_link();
        rtnl_link_inet6_set_addr_gen_mode(change.get(), IN6_ADDR_GEN_MODE_NONE);
        change_link(sk, static_cast<int>(d.ifindex()), change.get(), "IPv6 addrgenmode");
      }
    });
  }
}

void set_links_up(nl_sock* sk, const img::NetNs& ns) {
  for (const auto& d : ns.links()) {
    if (!(d.flags() & IFF_UP)) continue;
    in_context("link " + d.name(), [&] {
      nl::Link change = alloc_link();
      rtnl_link_set_flags(change.get(), IFF_UP);
      change_link(sk, static_cast<int>(d.ifindex()), change.get(), "set up");
    });
  }
}

void restore_addresses(nl_sock* sk, const img::NetNs& ns) {
  std::map<std::string, int> index = ifindexes(ns);
  for (const auto& d : ns.addresses()) {
    int family = static_cast<int>(d.family());
    nl::Addr a(rtnl_addr_alloc());
    if (!a) throw Error("rtnl_addr_alloc: out of memory");
    nl::NlAddr local = nl::make_addr(family, d.local(), d.prefixlen());
    char text[INET6_ADDRSTRLEN + 8];
    nl_addr2str(local.get(), text, sizeof text);
    in_context(strfmt("address %s on %s", text, d.dev().c_str()), [&] {
      rtnl_addr_set_ifindex(a.get(), ifindex_of(index, d.dev()));
      rtnl_addr_set_family(a.get(), family);
      nl::check(rtnl_addr_set_local(a.get(), local.get()), "local");
      rtnl_addr_set_prefixlen(a.get(), static_cast<int>(d.prefixlen()));
      if (!d.peer().empty())
        nl::check(rtnl_addr_set_peer(a.get(), nl::make_addr(family, d.peer(), d.prefixlen()).get()),
                  "peer");
      if (!d.broadcast().empty())
        nl::check(rtnl_addr_set_broadcast(a.get(), nl::make_addr(family, d.broadcast(), 0).get()),
                  "broadcast");
      rtnl_addr_set_scope(a.get(), static_cast<int>(d.scope()));
      rtnl_addr_set_flags(a.get(), d.flags());
      if (!d.label().empty() && family == AF_INET) rtnl_addr_set_label(a.get(), d.label().c_str());
      if (d.valid_lft() != kForever) {
        rtnl_addr_set_valid_lifetime(a.get(), d.valid_lft());
        rtnl_addr_set_preferred_lifetime(a.get(), d.preferred_lft());
      }
      int err = rtnl_addr_add(sk, a.get(), NLM_F_EXCL);
      // lo's addresses came back by themselves when it went up.
      if (err == -NLE_EXIST) return;
      nl::check(err, "add");
    });
  }
}

void finish_links(nl_sock* sk, const img::NetNs& ns) {
  for (const auto& d : ns.links()) {
    in_context("link " + d.name(), [&] {
      if (d.addr_gen_mode() >= 0 && d.addr_gen_mode() != IN6_ADDR_GEN_MODE_NONE) {
        nl::Link change = alloc_link();
        rtnl_link_inet6_set_addr_gen_mode(change.get(), static_cast<uint8_t>(d.addr_gen_mode()));
        change_link(sk, static_cast<int>(d.ifindex()), change.get(), "IPv6 addrgenmode");
      }
    });
  }
}

namespace {

// Puts the host side (index) of the veth d into its bridge, if it has one.
void enslave_peer(nl_sock* host_sk, nl_cache* host, const img::Link& d, int index,
                  const NetRestoreOptions& opts) {
  std::string bridge = opts.bridge.empty() ? d.peer().master() : opts.bridge;
  if (bridge.empty()) return;
  int br = rtnl_link_name2i(host, bridge.c_str());
  if (!br && opts.bridge.empty()) {
    LOG_WARN("veth %s: bridge %s of the dump does not exist here; %s is left unbridged",
             d.name().c_str(), bridge.c_str(), host_name(d, opts).c_str());
    return;
  }
  if (!br) throw Error("bridge " + bridge + " does not exist here");
  nl::Link change = alloc_link();
  rtnl_link_set_master(change.get(), br);
  change_link(host_sk, index, change.get(), "enslave to " + bridge);
}

// f(veth, host cache, index of its host side) for each veth the restore
// made, with the veth named in errors.
template <class F>
void each_host_veth(nl_sock* host_sk, const img::NetNs& ns, const NetRestoreOptions& opts, F&& f) {
  nl::Cache host = nl::link_cache(host_sk);
  for (const auto& d : ns.links()) {
    if (d.kind() != "veth" || d.builtin()) continue;
    std::string name = host_name(d, opts);
    in_context(strfmt("veth %s: host side %s", d.name().c_str(), name.c_str()), [&] {
      int index = rtnl_link_name2i(host.get(), name.c_str());
      if (!index) throw Error("not found after creation");
      f(d, host.get(), index);
    });
  }
}

}  // namespace

void enslave_veth_peers(nl_sock* host_sk, const img::NetNs& ns, const NetRestoreOptions& opts) {
  each_host_veth(host_sk, ns, opts, [&](const img::Link& d, nl_cache* host, int index) {
    enslave_peer(host_sk, host, d, index, opts);
  });
}

void configure_veth_peers(nl_sock* host_sk, const img::NetNs& ns, const NetRestoreOptions& opts) {
  each_host_veth(host_sk, ns, opts, [&](const img::Link& d, nl_cache* host, int index) {
    if (!opts.bridge_late) enslave_peer(host_sk, host, d, index, opts);
    if (d.peer().up()) {
      nl::Link change = alloc_link();
      rtnl_link_set_flags(change.get(), IFF_UP);
      change_link(host_sk, index, change.get(), "set up");
    }
  });
}

void remove_host_veths(nl_sock* host_sk, const img::NetNs& ns, const NetRestoreOptions& opts,
                       const std::set<std::string>& names) {
  for (const auto& d : ns.links()) {
    if (d.kind() != "veth" || d.builtin()) continue;
    std::string name = host_name(d, opts);
    if (!names.count(name)) continue;
    rtnl_link* found = nullptr;
    if (rtnl_link_get_kernel(host_sk, 0, name.c_str(), &found) < 0) continue;
    nl::Link l(found);
    // Only the link restore_netns made: a veth with the restored MAC whose
    // peer has the restored ifindex.
    bool ours =
        rtnl_link_is_veth(l.get()) &&
        rtnl_link_get_link(l.get()) == static_cast<int>(d.ifindex()) &&
        (d.peer().mac().empty() || nl::addr_bytes(rtnl_link_get_addr(l.get())) == host_peer_mac(d));
    if (!ours) {
      LOG_WARN("veth %s: host-side %s is not the one restored, left alone", d.name().c_str(),
               name.c_str());
      continue;
    }
    int err = rtnl_link_delete(host_sk, l.get());
    if (err < 0)
      LOG_WARN("veth %s: cannot delete host-side %s: %s", d.name().c_str(), name.c_str(),
               nl_geterror(err));
  }
}

}  // namespace ckpt::netns
