// Routes, policy rules and static neighbours of a network namespace
// (objects/netns.h). Routes and rules travel as raw attributes: libnl's
// route and rule objects silently drop attributes they do not know
// (suppress_prefixlen, uid ranges, route preferences, ...), and a dump must
// refuse what it cannot put back rather than lose it.
#include <arpa/inet.h>
#include <linux/fib_rules.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cstring>
#include <set>

#include "objects/netns_parts.h"
#include "sys/error.h"
#include "sys/log.h"

namespace ckpt::netns {

namespace {

// Route attributes that are put back as they were. RTA_OIF, RTA_IIF and the
// ifindexes inside RTA_MULTIPATH stay valid: links keep their ifindexes.
bool restorable_route_attr(uint16_t t) {
  switch (t) {
    case RTA_DST:
    case RTA_SRC:
    case RTA_IIF:
    case RTA_OIF:
    case RTA_GATEWAY:
    case RTA_PRIORITY:
    case RTA_PREFSRC:
    case RTA_METRICS:
    case RTA_MULTIPATH:
    case RTA_FLOW:
    case RTA_TABLE:
    case RTA_MARK:
    case RTA_VIA:
    case RTA_PREF:
    case RTA_TTL_PROPAGATE:
      return true;
    default:
      return false;
  }
}

// Attributes that describe the route's state, not its configuration.
bool state_route_attr(uint16_t t) {
  return t == RTA_CACHEINFO || t == RTA_EXPIRES || t == RTA_PAD;
}

bool restorable_rule_attr(uint16_t t) {
  switch (t) {
    case FRA_DST:
    case FRA_SRC:
    case FRA_IIFNAME:
    case FRA_OIFNAME:
    case FRA_GOTO:
    case FRA_PRIORITY:
    case FRA_FWMARK:
    case FRA_FWMASK:
    case FRA_FLOW:
    case FRA_TUN_ID:
    case FRA_SUPPRESS_IFGROUP:
    case FRA_SUPPRESS_PREFIXLEN:
    case FRA_TABLE:
    case FRA_L3MDEV:
    case FRA_UID_RANGE:
    case FRA_PROTOCOL:
    case FRA_IP_PROTO:
    case FRA_SPORT_RANGE:
    case FRA_DPORT_RANGE:
      return true;
    default:
      return false;
  }
}

std::string addr_text(int family, const std::string& bytes) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if ((family == AF_INET && bytes.size() == 4) || (family == AF_INET6 && bytes.size() == 16))
    inet_ntop(family, bytes.data(), buf, sizeof buf);
  return buf;
}

uint32_t u32_of(const std::string& v) {
  uint32_t x = 0;
  memcpy(&x, v.data(), std::min(v.size(), sizeof x));
  return x;
}

// "table 100 10.1.0.0/24 metric 5" for error messages.
std::string describe_route(const img::Route& r) {
  uint32_t table = r.table();
  std::string dst = "default", metric;
  for (const auto& a : r.attrs()) {
    if (a.type() == RTA_TABLE) table = u32_of(a.value());
    if (a.type() == RTA_DST)
      dst = addr_text(static_cast<int>(r.family()), a.value()) + strfmt("/%u", r.dst_len());
    if (a.type() == RTA_PRIORITY) metric = strfmt(" metric %u", u32_of(a.value()));
  }
  return strfmt("route table %u %s%s", table, dst.c_str(), metric.c_str());
}

std::string describe_rule(const img::Rule& r) {
  uint32_t prio = 0, table = r.table();
  for (const auto& a : r.attrs()) {
    if (a.type() == FRA_PRIORITY) prio = u32_of(a.value());
    if (a.type() == FRA_TABLE) table = u32_of(a.value());
  }
  return strfmt("%s rule %u (table %u)", r.family() == AF_INET6 ? "IPv6" : "IPv4", prio, table);
}

std::string route_payload(const img::Route& r) {
  rtmsg m{};
  m.rtm_family = static_cast<uint8_t>(r.family());
  m.rtm_dst_len = static_cast<uint8_t>(r.dst_len());
  m.rtm_src_len = static_cast<uint8_t>(r.src_len());
  m.rtm_tos = static_cast<uint8_t>(r.tos());
  m.rtm_table = static_cast<uint8_t>(r.table());
  m.rtm_protocol = static_cast<uint8_t>(r.protocol());
  m.rtm_scope = static_cast<uint8_t>(r.scope());
  m.rtm_type = static_cast<uint8_t>(r.type());
  m.rtm_flags = r.flags();
  std::string p(reinterpret_cast<const char*>(&m), sizeof m);
  for (const auto& a : r.attrs())
    nl::put_attr(&p, static_cast<uint16_t>(a.type()), a.value().data(), a.value().size());
  return p;
}

std::string rule_payload(const img::Rule& r) {
  fib_rule_hdr h{};
  h.family = static_cast<uint8_t>(r.family());
  h.dst_len = static_cast<uint8_t>(r.dst_len());
  h.src_len = static_cast<uint8_t>(r.src_len());
  h.tos = static_cast<uint8_t>(r.tos());
  h.table = static_cast<uint8_t>(r.table());
  h.action = static_cast<uint8_t>(r.action());
  h.flags = r.flags();
  std::string p(reinterpret_cast<const char*>(&h), sizeof h);
  for (const auto& a : r.attrs())
    nl::put_attr(&p, static_cast<uint16_t>(a.type()), a.value().data(), a.value().size());
  return p;
}

std::vector<img::Rule> list_rules(nl_sock* sk, int family) {
  std::vector<img::Rule> out;
  fib_rule_hdr req{};
  req.family = static_cast<uint8_t>(family);
  for (const auto& m : nl::dump_raw(sk, RTM_GETRULE, &req, sizeof req)) {
    if (m.type != RTM_NEWRULE || m.payload.size() < sizeof(fib_rule_hdr)) continue;
    fib_rule_hdr h;
    memcpy(&h, m.payload.data(), sizeof h);
    img::Rule r;
    r.set_family(h.family);
    r.set_dst_len(h.dst_len);
    r.set_src_len(h.src_len);
    r.set_tos(h.tos);
    r.set_table(h.table);
    r.set_action(h.action);
    // UNRESOLVED and DETACHED are the kernel's view of the rule's state.
    r.set_flags(h.flags & (FIB_RULE_INVERT | FIB_RULE_FIND_SADDR));
    std::vector<uint16_t> unknown;
    nl::for_each_attr(m.payload, sizeof h, [&](uint16_t t, const char* d, size_t len) {
      if (t == FRA_PAD) return;
      if (!restorable_rule_attr(t)) {
        unknown.push_back(t);
        return;
      }
      img::RtAttr* a = r.add_attrs();
      a->set_type(t);
      a->set_value(std::string(d, len));
    });
    if (!unknown.empty())
      throw Error(
          strfmt("%s: attribute %u is not supported", describe_rule(r).c_str(), unknown[0]));
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

void dump_routes(nl_sock* sk, img::NetNs* ns) {
  for (int family : {AF_INET, AF_INET6}) {
    rtmsg req{};
    req.rtm_family = static_cast<uint8_t>(family);
    for (const auto& m : nl::dump_raw(sk, RTM_GETROUTE, &req, sizeof req)) {
      if (m.type != RTM_NEWROUTE || m.payload.size() < sizeof(rtmsg)) continue;
      rtmsg h;
      memcpy(&h, m.payload.data(), sizeof h);
      // The kernel makes these again for the addresses and links (prefix,
      // local, broadcast, multicast and link-local routes); cached clones
      // are not configuration.
      if (h.rtm_protocol == RTPROT_KERNEL || (h.rtm_flags & RTM_F_CLONED)) continue;
      img::Route r;
      r.set_family(h.rtm_family);
      r.set_dst_len(h.rtm_dst_len);
      r.set_src_len(h.rtm_src_len);
      r.set_tos(h.rtm_tos);
      r.set_table(h.rtm_table);
      r.set_protocol(h.rtm_protocol);
      r.set_scope(h.rtm_scope);
      r.set_type(h.rtm_type);
      r.set_flags(h.rtm_flags & RTNH_F_ONLINK);
      std::vector<uint16_t> unknown;
      nl::for_each_attr(m.payload, sizeof h, [&](uint16_t t, const char* d, size_t len) {
        if (state_route_attr(t)) return;
        if (!restorable_route_attr(t)) {
          unknown.push_back(t);
          return;
        }
        img::RtAttr* a = r.add_attrs();
        a->set_type(t);
        a->set_value(std::string(d, len));
      });
      if (!unknown.empty()) {
        const char* what = unknown[0] == RTA_NH_ID   ? " (nexthop objects)"
                           : unknown[0] == RTA_ENCAP ? " (encapsulation)"
                                                     : "";
        throw Error(strfmt("%s: attribute %u%s is not supported", describe_route(r).c_str(),
                           unknown[0], what));
      }
      *ns->add_routes() = std::move(r);
    }
  }
}

void restore_routes(nl_sock* sk, const img::NetNs& ns) {
  // A route can need another first (a gateway reachable through a route
  // that is not an address's prefix): retry the failed ones while each
  // round makes progress.
  std::vector<const img::Route*> todo;
  for (const auto& r : ns.routes()) todo.push_back(&r);
  while (!todo.empty()) {
    std::vector<const img::Route*> failed;
    std::string first_route;
    nl::Ack first_ack;
    for (const img::Route* r : todo) {
      nl::Ack ack = nl::request(sk, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, route_payload(*r));
      if (ack.err == 0) continue;
      // The kernel already made an identical one (e.g. for an address).
      if (ack.err == EEXIST) continue;
      if (first_route.empty()) {
        first_route = describe_route(*r);
        first_ack = ack;
      }
      failed.push_back(r);
    }
    if (failed.size() == todo.size()) nl::throw_ack(first_ack, first_route);
    todo = std::move(failed);
  }
}

void dump_rules(nl_sock* sk, img::NetNs* ns) {
  for (int family : {AF_INET, AF_INET6})
    for (auto& r : list_rules(sk, family)) *ns->add_rules() = std::move(r);
}

void restore_rules(nl_sock* sk, const img::NetNs& ns) {
  // A fresh namespace has its default rules; the saved list has every rule,
  // so the difference says what to delete (a default rule removed before
  // the dump) and what to add.
  std::set<std::string> want, have;
  for (const auto& r : ns.rules()) want.insert(rule_payload(r));
  for (int family : {AF_INET, AF_INET6}) {
    for (const auto& r : list_rules(sk, family)) {
      std::string p = rule_payload(r);
      have.insert(p);
      if (want.count(p)) continue;
      nl::Ack ack = nl::request(sk, RTM_DELRULE, 0, p);
      if (ack.err) nl::throw_ack(ack, "delete default " + describe_rule(r));
    }
  }
  for (const auto& r : ns.rules()) {
    std::string p = rule_payload(r);
    if (have.count(p)) continue;
    nl::Ack ack = nl::request(sk, RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, p);
    if (ack.err) nl::throw_ack(ack, describe_rule(r));
  }
}

void dump_neighbours(nl_sock* sk, img::NetNs* ns) {
  nl::Cache neighs = nl::neigh_cache(sk);
  std::map<int, std::string> names;
  for (const auto& l : ns->links()) names[static_cast<int>(l.ifindex())] = l.name();
  for (nl_object* o = nl_cache_get_first(neighs.get()); o; o = nl_cache_get_next(o)) {
    auto* n = reinterpret_cast<rtnl_neigh*>(o);
    int family = rtnl_neigh_get_family(n);
    if (family != AF_INET && family != AF_INET6) continue;
    int state = rtnl_neigh_get_state(n);
    if (!(state & (NUD_PERMANENT | NUD_NOARP))) continue;
    auto dev = names.find(rtnl_neigh_get_ifindex(n));
    if (dev == names.end()) continue;
    img::Neighbour* d = ns->add_neighbours();
    d->set_family(static_cast<uint32_t>(family));
    d->set_dev(dev->second);
    d->set_dst(nl::addr_bytes(rtnl_neigh_get_dst(n)));
    d->set_lladdr(nl::addr_bytes(rtnl_neigh_get_lladdr(n)));
    d->set_state(static_cast<uint32_t>(state & (NUD_PERMANENT | NUD_NOARP)));
    d->set_flags(rtnl_neigh_get_flags(n) & (NTF_PROXY | NTF_ROUTER));
  }
}

void restore_neighbours(nl_sock* sk, const img::NetNs& ns) {
  std::map<std::string, int> index;
  for (const auto& l : ns.links()) index[l.name()] = static_cast<int>(l.ifindex());
  for (const auto& d : ns.neighbours()) {
    int family = static_cast<int>(d.family());
    in_context("neighbour " + addr_text(family, d.dst()) + " on " + d.dev(), [&] {
      nl::Neigh n(rtnl_neigh_alloc());
      if (!n) throw Error("rtnl_neigh_alloc: out of memory");
      rtnl_neigh_set_ifindex(n.get(), index.at(d.dev()));
      rtnl_neigh_set_family(n.get(), family);
      nl::check(rtnl_neigh_set_dst(n.get(), nl::make_addr(family, d.dst(), 0).get()), "dst");
      if (!d.lladdr().empty())
        rtnl_neigh_set_lladdr(n.get(), nl::make_addr(AF_LLC, d.lladdr(), 0).get());
      rtnl_neigh_set_state(n.get(), static_cast<int>(d.state()));
      if (d.flags()) rtnl_neigh_set_flags(n.get(), d.flags());
      // The kernel may have made a NOARP entry for it already: replace.
      nl::check(rtnl_neigh_add(sk, n.get(), NLM_F_CREATE | NLM_F_REPLACE), "add");
    });
  }
}

}  // namespace ckpt::netns
