// The network namespace object (objects/netns.h): the order of the steps.
// The parts are in netns_links.cc, netns_routes.cc, netns_firewall.cc and
// netns_sysctl.cc.
#include "objects/netns.h"

#include <map>
#include <mutex>

#include <net/if.h>

#include <set>

#include "image/record_file.h"
#include "objects/netns_parts.h"
#include "sys/error.h"
#include "sys/log.h"
#include "sys/netlink.h"
#include "sys/netns_exec.h"

namespace ckpt {

namespace {

// A fresh namespace says what the kernel makes by itself: its links (lo,
// fallback tunnels) and its sysctl defaults. That does not change while
// ckpt runs, and making a namespace costs milliseconds, which a migration's
// last round (the tree stopped) should not pay: made once per process
// (prepare_netns_dump) and kept.
struct Fresh {
  std::mutex mu;
  UniqueFd scratch;
  std::map<std::string, std::string> links, sysctls;
  std::string checked_ruleset;  // the last ruleset proved to load
};

Fresh& fresh() {
  static Fresh f;
  return f;
}

void make_fresh(Fresh& f) {
  if (f.scratch) return;
  f.scratch = new_netns();
  run_in_netns(f.scratch.get(), [&] {
    nl::Sock sk = nl::connect_route();
    f.links = netns::list_link_kinds(sk.get());
    f.sysctls = netns::read_sysctls_in_ns();
  });
}

}  // namespace

void prepare_netns_dump() {
  Fresh& f = fresh();
  std::lock_guard<std::mutex> lk(f.mu);
  in_context("network namespace: a fresh one for its defaults", [&] { make_fresh(f); });
}

struct NetnsReader::Parts {
  nl::Sock sk = nl::connect_route();
  NftCtx nft;
  netns::SysctlFiles sysctls;
};

NetnsReader::NetnsReader() {
  in_context("network namespace", [&] {
    Fresh& f = fresh();
    {
      std::lock_guard<std::mutex> lk(f.mu);
      make_fresh(f);
    }
    p_ = std::make_unique<Parts>();
  });
}

NetnsReader::~NetnsReader() = default;

img::NetNs NetnsReader::read(nl_sock* host_sk) {
  return in_context("network namespace", [&] {
    img::NetNs ns;
    Fresh& f = fresh();
    std::lock_guard<std::mutex> fresh_lk(f.mu);
    make_fresh(f);
    std::vector<netns::VethRef> veths = netns::dump_links(p_->sk.get(), f.links, &ns);
    netns::dump_addresses(p_->sk.get(), &ns);
    netns::dump_routes(p_->sk.get(), &ns);
    netns::dump_rules(p_->sk.get(), &ns);
    netns::dump_neighbours(p_->sk.get(), &ns);
    {
      log::StepTimer st("netns firewall");
      netns::dump_firewall_in_ns(p_->nft, &ns);
    }
    std::map<std::string, std::string> sysctls;
    {
      log::StepTimer st("netns sysctls");
      if (!p_->sysctls.read(&sysctls)) {
        LOG_DEBUG(
            "netns: sysctls read one by one (%s)",
            p_->sysctls.size() ? "entries came or went since they were opened" : "not kept open");
        sysctls = netns::read_sysctls_in_ns();
      }
    }
    netns::pick_sysctls(sysctls, f.sysctls, &ns);
    netns::dump_veth_peers(host_sk, veths, &ns);

    // A ruleset proved to load once loads again.
    if (ns.nftables() != f.checked_ruleset) {
      run_in_netns(f.scratch.get(), [&] { netns::check_firewall_in_ns(ns); });
      f.checked_ruleset = ns.nftables();
    }
    LOG_DEBUG("netns: %d links, %d addresses, %d routes, %d rules, %d neighbours, %d+%d sysctls",
              ns.links_size(), ns.addresses_size(), ns.routes_size(), ns.rules_size(),
              ns.neighbours_size(), ns.sysctls_size(), ns.dev_sysctls_size());
    return ns;
  });
}

img::NetNs dump_netns(int netns_fd) {
  // The veth peers are in our namespace: this thread's.
  nl::Sock host_sk = nl::connect_route();
  img::NetNs ns;
  run_in_netns(netns_fd, [&] { ns = NetnsReader().read(host_sk.get()); });
  return ns;
}

namespace {

// Deletes the host-side veth ends made so far unless the restore got to
// the end.
class HostVethUndo {
 public:
  HostVethUndo(nl_sock* host_sk, const img::NetNs& ns, const NetRestoreOptions& opts)
      : sk_(host_sk), ns_(ns), opts_(opts) {}
  ~HostVethUndo() {
    if (done_ || created.empty()) return;
    try {
      netns::remove_host_veths(sk_, ns_, opts_,
                               std::set<std::string>(created.begin(), created.end()));
    } catch (const Error& e) {
      LOG_WARN("network namespace: undo: %s", e.what());
    }
  }
  HostVethUndo(const HostVethUndo&) = delete;
  HostVethUndo& operator=(const HostVethUndo&) = delete;
  void commit() { done_ = true; }
  std::vector<std::string> created;

 private:
  nl_sock* sk_;
  const img::NetNs& ns_;
  const NetRestoreOptions& opts_;
  bool done_ = false;
};

}  // namespace

void restore_netns(int netns_fd, const img::NetNs& ns, const NetRestoreOptions& opts) {
  in_context("network namespace", [&] {
    // Both stay bound to the caller's namespace, also when used from the
    // thread inside the restored one.
    UniqueFd host_ns = current_netns();
    nl::Sock host_sk = nl::connect_route();
    HostVethUndo undo(host_sk.get(), ns, opts);
    run_in_netns(netns_fd, [&] {
      nl::Sock sk = nl::connect_route();
      netns::check_restore(sk.get(), host_sk.get(), ns, opts);
      // Global sysctls first: a device takes the "default" conf when made.
      netns::restore_sysctls_in_ns(ns.sysctls());
      netns::create_links(sk.get(), host_ns.get(), ns, opts, &undo.created);
      netns::restore_sysctls_in_ns(ns.dev_sysctls());
      netns::set_links_up(sk.get(), ns);
      netns::restore_addresses(sk.get(), ns);
      netns::finish_links(sk.get(), ns);
      netns::configure_veth_peers(host_sk.get(), ns, opts);
      netns::restore_routes(sk.get(), ns);
      netns::restore_rules(sk.get(), ns);
      netns::restore_neighbours(sk.get(), ns);
      netns::restore_firewall_in_ns(ns);
    });
    undo.commit();
  });
}

bool all_veths_bridged(const img::NetNs& ns, const NetRestoreOptions& opts) {
  for (const auto& d : ns.links())
    if (d.kind() == "veth" && !d.builtin() && opts.bridge.empty() && d.peer().master().empty())
      return false;
  return true;
}

void attach_netns(const img::NetNs& ns, const NetRestoreOptions& opts) {
  in_context("network namespace: bridge the veths", [&] {
    nl::Sock host_sk = nl::connect_route();
    netns::enslave_veth_peers(host_sk.get(), ns, opts);
  });
}

NetRestoreOptions parse_net_options(const std::string& spec) {
  NetRestoreOptions o;
  size_t pos = 0;
  while (pos < spec.size()) {
    size_t end = spec.find(',', pos);
    if (end == std::string::npos) end = spec.size();
    std::string item = spec.substr(pos, end - pos);
    pos = end + 1;
    size_t eq = item.find('=');
    std::string key = item.substr(0, eq),
                value = eq == std::string::npos ? "" : item.substr(eq + 1);
    std::string* field = key == "bridge"        ? &o.bridge
                         : key == "host_ifname" ? &o.host_ifname
                                                : nullptr;
    if (!field) throw UsageError("--net: unknown setting '" + item + "' (bridge=, host_ifname=)");
    if (value.empty() || value.size() >= IFNAMSIZ || value.find('/') != std::string::npos)
      throw UsageError("--net: " + key + " needs an interface name (1 to 15 characters)");
    *field = value;
  }
  return o;
}

void save_netns_image(image::ImageSink& sink, const img::NetNs& ns) {
  image::save_message(sink, kNetNsImage, image::Kind::NetNs, ns);
}

img::NetNs load_netns_image(const image::ImageSource& src) {
  img::NetNs ns;
  image::load_message(src, kNetNsImage, image::Kind::NetNs, ns);
  return ns;
}

void remove_restored_netns_links(const img::NetNs& ns, const NetRestoreOptions& opts) {
  try {
    std::set<std::string> names;
    for (const auto& l : ns.links())
      if (l.kind() == "veth" && !l.builtin()) names.insert(netns::host_name(l, opts));
    if (names.empty()) return;
    nl::Sock host_sk = nl::connect_route();
    netns::remove_host_veths(host_sk.get(), ns, opts, names);
  } catch (const Error& e) {
    LOG_WARN("network namespace: removing the restored veths: %s", e.what());
  }
}

}  // namespace ckpt
