// The parts of the network namespace object (objects/netns.h), one file
// each: links and addresses (netns_links.cc), routes, rules and neighbours
// (netns_routes.cc), the firewall (netns_firewall.cc), sysctls
// (netns_sysctl.cc). Functions named *_in_ns run on a thread inside the
// namespace they read or change; the others take a socket of the namespace
// they work on.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "netns.pb.h"
#include "objects/netns.h"
#include "sys/fd.h"
#include "sys/netlink.h"
#include "sys/nftables.h"

namespace ckpt::netns {

// --- links and addresses ---------------------------------------------------
// A veth end inside the namespace and the ifindex of its peer outside it.
struct VethRef {
  int link = 0;          // index into NetNs.links
  int peer_ifindex = 0;  // in the peer's namespace
};
// Links of the namespace (sk inside it). fresh_links: name -> kind of the
// links a fresh namespace has (they are configured, not created, at restore).
std::vector<VethRef> dump_links(nl_sock* sk, const std::map<std::string, std::string>& fresh_links,
                                img::NetNs* ns);
// The veth peers, found in the namespace of host_sk.
void dump_veth_peers(nl_sock* host_sk, const std::vector<VethRef>& veths, img::NetNs* ns);
void dump_addresses(nl_sock* sk, img::NetNs* ns);
// name -> kind of every link (for the fresh-namespace reference).
std::map<std::string, std::string> list_link_kinds(nl_sock* sk);

// The host-side name of a veth's peer, with the options applied.
std::string host_name(const img::Link& l, const NetRestoreOptions& opts);
// Before anything is created: the namespace is fresh, host-side names are
// free, the requested bridge exists.
void check_restore(nl_sock* sk, nl_sock* host_sk, const img::NetNs& ns,
                   const NetRestoreOptions& opts);
// Creates the links (down, IPv6 address generation off), configures the
// builtin ones, enslaves ports; veth peers go to host_ns_fd and their
// names are appended to created as soon as they exist.
void create_links(nl_sock* sk, int host_ns_fd, const img::NetNs& ns, const NetRestoreOptions& opts,
                  std::vector<std::string>* created);
// Sets links up as dumped. Before the addresses, as a namespace is usually
// configured: the kernel adds some routes (IPv6 multicast) only for
// addresses added to a link that is up.
void set_links_up(nl_sock* sk, const img::NetNs& ns);
void restore_addresses(nl_sock* sk, const img::NetNs& ns);
// Sets the links' saved IPv6 address generation mode, once the addresses
// are back.
void finish_links(nl_sock* sk, const img::NetNs& ns);
// Host side of the veths: MTU, bridge (unless opts.bridge_late), up.
void configure_veth_peers(nl_sock* host_sk, const img::NetNs& ns, const NetRestoreOptions& opts);
// The bridge part of it, for opts.bridge_late.
void enslave_veth_peers(nl_sock* host_sk, const img::NetNs& ns, const NetRestoreOptions& opts);
// Deletes the host-side veth ends named in names that are still ours.
void remove_host_veths(nl_sock* host_sk, const img::NetNs& ns, const NetRestoreOptions& opts,
                       const std::set<std::string>& names);

// --- routes, rules, neighbours -------------------------------------------------
void dump_routes(nl_sock* sk, img::NetNs* ns);
void restore_routes(nl_sock* sk, const img::NetNs& ns);
void dump_rules(nl_sock* sk, img::NetNs* ns);
void restore_rules(nl_sock* sk, const img::NetNs& ns);
void dump_neighbours(nl_sock* sk, img::NetNs* ns);
void restore_neighbours(nl_sock* sk, const img::NetNs& ns);

// --- firewall ----------------------------------------------------------------
// nft: a context made in the namespace (its netlink socket is bound there).
void dump_firewall_in_ns(NftCtx& nft, img::NetNs* ns);
// Loads the saved ruleset in dry-run mode (in a scratch namespace) so that
// a ruleset nft cannot load back is refused at dump, not at restore.
void check_firewall_in_ns(const img::NetNs& ns);
void restore_firewall_in_ns(const img::NetNs& ns);

// --- sysctls -----------------------------------------------------------------
// Every readable and writable file under /proc/sys/net/{core,ipv4,ipv6,
// unix,netfilter} of the calling thread's namespace: path -> value.
std::map<std::string, std::string> read_sysctls_in_ns();
// The same files opened once (while the tree runs) and read again on
// demand: a read is then one pread per entry, where a lookup and open of
// each had been two thirds of the cost. Made and read on a thread inside
// the namespace (directory listings follow the reader's namespace).
class SysctlFiles {
 public:
  SysctlFiles();
  // The values now, if the directories still list exactly the entries
  // opened (no device came or went, nothing new was registered); false
  // otherwise, or if the files could not all be kept open.
  bool read(std::map<std::string, std::string>* out) const;
  size_t size() const { return files_.size(); }

 private:
  struct Dir {
    std::string rel;
    UniqueFd fd;
    std::vector<std::string> names;  // sorted, files and subdirectories
  };
  void open_dir(UniqueFd dir, const std::string& rel);
  std::vector<Dir> dirs_;
  std::vector<std::pair<std::string, UniqueFd>> files_;
  bool ok_ = true;
};
// Picks the sysctls to save: global ones that differ from fresh, and the
// per-device ones of the dumped links.
void pick_sysctls(const std::map<std::string, std::string>& now,
                  const std::map<std::string, std::string>& fresh, img::NetNs* ns);
// Writes those that differ from the current value.
void restore_sysctls_in_ns(const google::protobuf::RepeatedPtrField<img::Sysctl>& sysctls);

}  // namespace ckpt::netns
