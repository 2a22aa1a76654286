// A network namespace as an object: its links (lo, veth, dummy, bridge),
// addresses, routes of every table, policy rules, static neighbours,
// nftables ruleset and legacy iptables rules, and the net sysctls that
// differ from a fresh namespace (proto/netns.proto, netns.img).
//
// Call order. Dump: dump_netns(fd of /proc/PID/ns/net) while the tree is
// frozen, from the namespace that holds the veth peers. Restore:
// restore_netns() into a fresh namespace (only lo, down) before any process
// runs in it, from the namespace where the veth peers must go; if a later
// step of the restore fails, remove_restored_netns_links() takes the
// host-side veth ends away again (restore_netns cleans up after itself when
// it is the one that fails).
//
// Every namespace switch happens on a short-lived thread (sys/netns_exec.h):
// the calling thread never changes namespace.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "image/image_io.h"
#include "netns.pb.h"
#include "sys/fd.h"

struct nl_sock;

namespace ckpt {

struct NetRestoreOptions {
  // Host-side bridge for the veth peers; empty: the dumped peer's master,
  // if a bridge of that name exists here (else the peer is left unbridged,
  // with a warning).
  std::string bridge;
  // Name of the host-side veth end; empty: the dumped one. Only when the
  // namespace has a single veth.
  std::string host_ifname;
  // The host ends join their bridge only at attach_netns(), just before the
  // tree runs, instead of at once: until then nothing from outside reaches
  // the namespace, which keeps its connections' peers out as the network
  // lock would (and costs a netlink message where the lock's nftables
  // table costs 5-10 ms). Only when every veth has a bridge
  // (all_veths_bridged).
  bool bridge_late = false;
};

// Whether every veth of ns goes into a bridge on this host (opts.bridge, or
// the dumped peer's master).
bool all_veths_bridged(const img::NetNs& ns, const NetRestoreOptions& opts);
// opts.bridge_late: the host ends join their bridges now.
void attach_netns(const img::NetNs& ns, const NetRestoreOptions& opts);

// Parses the value of `--net`: comma-separated "bridge=BR" and
// "host_ifname=NAME" (e.g. "bridge=br2,host_ifname=veth-c1"). Throws
// UsageError for anything else or a name longer than an interface name.
NetRestoreOptions parse_net_options(const std::string& spec);

// Reads everything the namespace netns_fd holds. Throws Error naming the
// link, route, rule or table that cannot be saved (unsupported link kind,
// a route through a nexthop object, a veth whose peer is not in our
// namespace, an nftables ruleset that would not load back, ...).
img::NetNs dump_netns(int netns_fd);
// dump_netns in two steps, for a dump that can begin before its tree stops
// (NetnsDump, objects/namespaces.h). Made on a thread inside the namespace
// while the tree still runs, it opens what the read needs: a netlink
// socket, an nftables context, every sysctl file (whose lookups are two
// thirds of reading them), and the scratch namespace's defaults. read(), on
// the same thread once the tree is stopped, reads. host_sk: a route socket
// of the namespace holding the veth peers.
class NetnsReader {
 public:
  NetnsReader();
  ~NetnsReader();
  NetnsReader(const NetnsReader&) = delete;
  NetnsReader& operator=(const NetnsReader&) = delete;
  img::NetNs read(nl_sock* host_sk);

 private:
  struct Parts;
  std::unique_ptr<Parts> p_;
};
// Does now what the first dump_netns of this process would do first (make
// a scratch namespace and read its defaults, ~10-20 ms), for callers that
// know a dump is coming while the tree still runs (a migration).
void prepare_netns_dump();

// Recreates ns in netns_fd, a fresh namespace with nothing but lo (down).
// Links keep their ifindexes, names and MACs; veth peers are created in the
// caller's namespace and put on opts.bridge (or the dumped bridge).
void restore_netns(int netns_fd, const img::NetNs& ns, const NetRestoreOptions& opts);

// Deletes the host-side veth ends restore_netns created (deleting one end
// deletes the other). Only links that are still the ones restored (a veth
// with the restored MAC whose peer has the restored ifindex) are touched.
// Never throws; problems are logged.
void remove_restored_netns_links(const img::NetNs& ns, const NetRestoreOptions& opts);

// A network namespace restored ahead of its tree, from an image that came
// early: a migration's source sends the namespace (in its preview) right
// before it stops the tree, and the destination builds it into a new
// namespace before the stop. Built with bridge_late, so nothing from
// outside reaches it until attach_netns(). Only for namespaces whose veths
// all go into bridges (accepts()). restore_tree adopts it if the tree's
// netns.img is the same; otherwise, or if the restore never comes, the
// destructor removes its host veth ends and the namespace goes with its
// last fd.
class PreparedNetns {
 public:
  static bool accepts(const img::NetNs& ns, const NetRestoreOptions& opts);
  // Builds it; a failure is logged (the restore builds it again).
  PreparedNetns(img::NetNs ns, NetRestoreOptions opts);
  ~PreparedNetns();
  PreparedNetns(const PreparedNetns&) = delete;
  PreparedNetns& operator=(const PreparedNetns&) = delete;
  // The namespace (an fd of its nsfs file, owned by this object) if it was
  // built from this very ns and opts; then its host veth ends are the
  // caller's to remove on failure. -1 otherwise (why is logged), the
  // namespace removed already.
  int adopt(const img::NetNs& ns, const NetRestoreOptions& opts);
  // The namespace, or -1 if the build failed (the root made ahead,
  // early_root.h, is cloned into it before anything is adopted).
  int fd() const { return built_ ? fd_.get() : -1; }

 private:
  img::NetNs ns_;
  NetRestoreOptions opts_;
  UniqueFd fd_;
  bool built_ = false, adopted_ = false;
};

// netns.img (image kind NetNs, one NetNs record).
constexpr const char* kNetNsImage = "netns.img";
void save_netns_image(image::ImageSink& sink, const img::NetNs& ns);
img::NetNs load_netns_image(const image::ImageSource& src);

}  // namespace ckpt
