#include "objects/net_lock.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include <functional>
#include <string_view>

#include "image/record_file.h"
#include "sys/error.h"
#include "sys/log.h"
#include "sys/netns_exec.h"

namespace ckpt {

namespace {

std::string addr_text(uint32_t family, const std::string& raw) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if ((family == AF_INET && raw.size() == 4) || (family == AF_INET6 && raw.size() == 16))
    inet_ntop(static_cast<int>(family), raw.data(), buf, sizeof(buf));
  return buf;
}

const char* proto_name(uint32_t p) {
  return p == IPPROTO_UDP ? "udp" : "tcp";
}

// Runs f in the network namespace netns_fd (-1: ours, on this thread).
void in_netns(int netns_fd, const std::function<void()>& f) {
  if (netns_fd < 0)
    f();
  else
    run_in_netns(netns_fd, f);
}

std::string chains(const std::string& t, const char* policy = "accept") {
  // Priority -300: before conntrack (-200) and any ordinary filter, so no
  // other rule sees, accepts or answers these packets first.
  return "add table inet " + t + "\nflush table inet " + t + "\nadd chain inet " + t +
         " lock_in { type filter hook input priority -300; policy " + policy +
         "; }\nadd chain inet " + t + " lock_out { type filter hook output priority -300; policy " +
         policy + "; }\n";
}

// A whole namespace's lock: everything but loopback is dropped by the
// chains' policy, so locking and lifting flip two policies (one small
// nfnetlink batch) instead of adding and flushing rules.
std::string whole_ns_chains(const std::string& t, const char* policy) {
  return chains(t, policy) + "add rule inet " + t +
         " lock_in iifname \"lo\" accept\nadd rule inet " + t + " lock_out oifname \"lo\" accept\n";
}

const std::vector<std::string> kLockChains = {"lock_in", "lock_out"};
constexpr int kNfprotoInet = 1;  // linux/netfilter.h clashes with netinet/in.h

}  // namespace

std::string lock_table_name(pid_t root) {
  return "ckpt_lock_" + std::to_string(root);
}

std::string describe(const img::LockedConn& c) {
  std::string l = addr_text(c.family(), c.local_addr());
  std::string r = c.remote_addr().empty() ? "*" : addr_text(c.family(), c.remote_addr());
  if (c.family() == AF_INET6) {
    l = "[" + l + "]";
    if (!c.remote_addr().empty()) r = "[" + r + "]";
  }
  return strfmt("%s %s:%u <-> %s:%u", proto_name(c.protocol()), l.c_str(), c.local_port(),
                r.c_str(), c.remote_port());
}

std::string lock_rules(const std::string& table, const img::LockedConn& c) {
  const char* ip = c.family() == AF_INET6 ? "ip6" : "ip";
  const char* l4 = proto_name(c.protocol());
  std::string local = addr_text(c.family(), c.local_addr());
  std::string in = strfmt("meta mark != %#x ", kLockBypassMark);
  std::string out = in;
  if (!c.local_addr().empty()) {
    in += strfmt("%s daddr %s ", ip, local.c_str());
    out += strfmt("%s saddr %s ", ip, local.c_str());
  }  // else bound to every address: the port alone, both families
  in += strfmt("%s dport %u", l4, c.local_port());
  out += strfmt("%s sport %u", l4, c.local_port());
  if (!c.remote_addr().empty()) {
    std::string remote = addr_text(c.family(), c.remote_addr());
    in += strfmt(" %s saddr %s %s sport %u", ip, remote.c_str(), l4, c.remote_port());
    out += strfmt(" %s daddr %s %s dport %u", ip, remote.c_str(), l4, c.remote_port());
  }
  return "add rule inet " + table + " lock_in " + in + " drop\nadd rule inet " + table +
         " lock_out " + out + " drop\n";
}

NetLock::~NetLock() {
  if (!table_made_) return;
  try {
    unlock();
  } catch (const std::exception& e) {
    LOG_ERROR("network lock %s left in place: %s (remove it with: nft delete table inet %s)",
              table_.c_str(), e.what(), table_.c_str());
  }
}

void NetLock::prepare(int netns_fd, const std::string& table) {
  if (netns_fd >= 0) {
    netns_own_.reset(fcntl(netns_fd, F_DUPFD_CLOEXEC, 0));
    if (!netns_own_) throw_errno("dup the network namespace");
    netns_fd_ = netns_own_.get();
    nft_.reset();
    nl_.reset();
  }
  table_ = table;
  if (netns_fd >= 0) {
    // The tree's own namespace: its lock will be a whole namespace's.
    run_nft(whole_ns_chains(table_, "accept"), "prepare " + table_);
    in_netns(netns_fd_, [&] { nl_ = nfnetlink_socket(); });
    prepared_whole_ = true;
  } else {
    run_nft(chains(table_), "prepare " + table_);
  }
  table_made_ = true;
}

void NetLock::set_policies(bool accept) {
  if (!nl_) in_netns(netns_fd_, [&] { nl_ = nfnetlink_socket(); });
  set_chain_policies(nl_.get(), kNfprotoInet, table_, kLockChains, accept);
}

void NetLock::run_nft(const std::string& cmds, const std::string& what) {
  in_netns(netns_fd_, [&] {
    if (!nft_) nft_ = std::make_unique<NftCtx>();
    nft_->run(cmds, what);
  });
}

void NetLock::forget_other(int netns_fd, const std::string& table) {
  if (!table_made_ || locked_) return;
  auto same_ns = [](int a, int b) {
    if (a < 0 || b < 0) return a == b;
    struct stat sa {
    }, sb{};
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_ino == sb.st_ino &&
           sa.st_dev == sb.st_dev;
  };
  if (table == table_ && same_ns(netns_fd, netns_fd_)) return;
  unlock();
  nft_.reset();
  nl_.reset();
  prepared_whole_ = false;
  netns_own_.reset();
  netns_fd_ = -1;
}

void NetLock::install(const std::vector<img::LockedConn>& conns) {
  std::string cmds = table_made_ ? "" : chains(table_);
  for (const auto& c : conns) cmds += lock_rules(table_, c);
  run_nft(cmds, "lock " + table_);
  table_made_ = locked_ = true;
}

void NetLock::add(const std::string& table, const img::LockedConn& c) {
  // The whole namespace is dropped already: c is only recorded.
  if (!whole_ns_) {
    if (!locked_) {
      forget_other(-1, table);
      table_ = table;
    }
    install({c});
  }
  conns_.push_back(c);
  LOG_DEBUG("network lock %s: %s", table_.c_str(), describe(c).c_str());
}

void NetLock::relock(const img::NetLock& saved) {
  table_ = saved.table();
  conns_.assign(saved.conns().begin(), saved.conns().end());
  table_made_ = false;  // chains() replaces a table of that name
  install(conns_);
  LOG_DEBUG("network lock %s: %zu connections", table_.c_str(), conns_.size());
}

void NetLock::lock_netns(int netns_fd, const std::string& table) {
  forget_other(netns_fd, table);
  if (!table_made_) {
    netns_fd_ = netns_fd;
    nft_.reset();  // made in another namespace
    nl_.reset();
    prepared_whole_ = false;
  }
  table_ = table;
  if (table_made_ && prepared_whole_)
    set_policies(false);
  else
    run_nft(whole_ns_chains(table, "drop"), "lock the network namespace");
  table_made_ = locked_ = true;
  whole_ns_ = true;
  LOG_DEBUG("network lock %s: the tree's network namespace", table_.c_str());
}

img::NetLock NetLock::image() const {
  img::NetLock m;
  m.set_table(table_);
  m.set_netns(whole_ns_);
  for (const auto& c : conns_) *m.add_conns() = c;
  return m;
}

void NetLock::keep() {
  if (locked_) {
    table_made_ = locked_ = false;
    return;
  }
  try {
    unlock();
  } catch (const Error& e) {
    LOG_WARN("network lock %s: %s (remove it with: nft delete table inet %s)", table_.c_str(),
             e.what(), table_.c_str());
  }
}

void NetLock::lift() {
  if (!locked_) return;
  if (whole_ns_)
    set_policies(true);
  else
    run_nft("flush chain inet " + table_ + " lock_in\nflush chain inet " + table_ + " lock_out\n",
            "lift " + table_);
  locked_ = false;
  LOG_DEBUG("network lock %s lifted", table_.c_str());
}

void NetLock::unlock() {
  if (!table_made_) return;
  table_made_ = locked_ = false;
  run_nft("delete table inet " + table_ + "\n", "unlock " + table_);
  LOG_DEBUG("network lock %s removed", table_.c_str());
}

bool is_lock_table(int family, const std::string& name) {
  return family == kNfprotoInet && name.rfind("ckpt_lock_", 0) == 0;
}

std::string without_lock_tables(const std::string& ruleset) {
  // nft prints a table as "table FAMILY NAME {" ... "}", both at column 0.
  std::string out;
  bool skipping = false;
  size_t pos = 0;
  while (pos < ruleset.size()) {
    size_t end = ruleset.find('\n', pos);
    end = end == std::string::npos ? ruleset.size() : end + 1;
    std::string_view line(ruleset.data() + pos, end - pos);
    pos = end;
    if (!skipping && line.rfind("table inet ckpt_lock_", 0) == 0) {
      skipping = line.find('{') != std::string_view::npos;
      continue;
    }
    if (skipping) {
      if (line.rfind("}", 0) == 0) skipping = false;
      continue;
    }
    out += line;
  }
  return out;
}

bool load_net_lock(const image::ImageSource& src, img::NetLock* out) {
  if (!src.exists(kNetLockImage)) return false;
  image::RecordReader r(src, kNetLockImage, image::Kind::NetLock);
  if (!r.next(*out)) throw Error(std::string("image ") + kNetLockImage + ": empty");
  if (out->table().empty() ||
      out->table().find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos)
    throw Error(std::string("image ") + kNetLockImage + ": bad table name '" + out->table() + "'");
  return true;
}

}  // namespace ckpt
