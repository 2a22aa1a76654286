// The network namespace object (objects/netns.h) on real namespaces: one is
// configured with ip/nft/sysctl, dumped, deleted, and restored into a fresh
// one; what `ip`, `nft` and /proc/sys/net show must be the same.
// Everything made here is named netns* and removed in TearDown, also when a
// test fails.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <regex>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "image/image_io.h"
#include "netns.pb.h"
#include "objects/netns.h"
#include "sys/error.h"
#include "sys/fd.h"

namespace ckpt {
namespace {

// Runs a shell command; returns its stdout, and its exit status in *status.
std::string sh(const std::string& cmd, int* status = nullptr) {
  std::string out;
  FILE* p = popen(("(" + cmd + "\n) 2>&1").c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = pclose(p);
  if (status) *status = st;
  return out;
}

// Runs a command that must succeed.
void must(const std::string& cmd) {
  int st = 0;
  std::string out = sh(cmd, &st);
  ASSERT_EQ(st, 0) << cmd << "\n" << out;
}

bool have(const std::string& tool) {
  int st = 0;
  sh("command -v " + tool, &st);
  return st == 0;
}

bool link_exists(const std::string& name) {
  int st = 0;
  sh("ip link show " + name, &st);
  return st == 0;
}

constexpr const char* kSrc = "netns-src";
constexpr const char* kDst = "netns-dst";

UniqueFd ns_fd(const std::string& name) {
  return open_or_throw("/run/netns/" + name, O_RDONLY);
}

std::string in(const std::string& ns, const std::string& cmd) {
  return sh("ip netns exec " + ns + " " + cmd);
}

// IPv6 duplicate address detection runs for a second or two after a link
// comes up; compare once it is over.
void wait_dad(const std::string& ns) {
  for (int i = 0; i < 50; ++i) {
    if (in(ns, "ip addr").find("tentative") == std::string::npos) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

std::string replace(std::string s, const std::string& re, const std::string& with) {
  return std::regex_replace(s, std::regex(re), with);
}

// What the namespace looks like, with what changes by itself removed:
// counters and timers, address lifetimes, the namespace's own name.
std::string snapshot(const std::string& ns) {
  wait_dad(ns);
  std::string s;
  std::string link = in(ns, "ip -d link");
  link =
      replace(link, R"((hello_timer|tcn_timer|topology_change_timer|gc_timer) +[0-9.]+)", "$1 T");
  // The peer's ifindex in our namespace is the kernel's choice.
  auto no_peer_index = [](const std::string& t) { return replace(t, R"(@if\d+:)", "@ifN:"); };
  s += "== ip -d link\n" + no_peer_index(link);
  s += "== ip addr\n" + no_peer_index(replace(in(ns, "ip addr"), R"(\n *valid_lft [^\n]*)", ""));
  s += "== ip route show table all\n" + in(ns, "ip route show table all");
  s += "== ip -6 route show table all\n" + in(ns, "ip -6 route show table all");
  s += "== ip rule\n" + in(ns, "ip rule");
  s += "== ip -6 rule\n" + in(ns, "ip -6 rule");
  s += "== ip neigh show nud permanent\n" + in(ns, "ip neigh show nud permanent");
  s += "== nft list ruleset\n" + in(ns, "nft list ruleset");
  if (have("iptables-legacy-save"))
    s += "== iptables-legacy-save\n" +
         // Chain policy counters count the namespace's own traffic (IGMP
         // reports) after the restore.
         replace(replace(in(ns, "iptables-legacy-save -c"), R"(#[^\n]*\n)", ""),
                 R"((\n:[A-Z]+ [A-Z]+) \[\d+:\d+\])", "$1 [c]");
  // Every net sysctl; the per-namespace random ones are restored too.
  s += "== sysctl\n" + in(ns, "sh -c 'sysctl -a 2>/dev/null | grep ^net\\. | sort'");
  return s;
}

// Lines that differ, for a readable failure.
std::string diff(const std::string& a, const std::string& b) {
  char fa[] = "/tmp/netns-diff-a-XXXXXX", fb[] = "/tmp/netns-diff-b-XXXXXX";
  int da = mkstemp(fa), db = mkstemp(fb);
  (void)!write(da, a.data(), a.size());
  (void)!write(db, b.data(), b.size());
  close(da), close(db);
  std::string d = sh(std::string("diff ") + fa + " " + fb);
  unlink(fa), unlink(fb);
  return d;
}

class NetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    if (!have("ip") || !have("nft")) GTEST_SKIP() << "needs iproute2 and nft";
    TearDown();
  }
  void TearDown() override {
    for (const char* ns : {kSrc, kDst}) sh(std::string("ip netns del ") + ns);
    for (const char* l : {"netnsv0", "netnsv1", "netnsbr1", "netnsbr2"})
      sh(std::string("ip link del ") + l);
  }

  // The source namespace: a veth to netnsbr1 in our namespace, a bridge
  // inside, IPv4 and IPv6 addresses, a second routing table, policy rules,
  // static neighbours, an nft table, a legacy iptables rule, sysctls.
  void make_source() {
    must("ip link add netnsbr1 type bridge && ip link set netnsbr1 up");
    must(std::string("ip netns add ") + kSrc);
    std::string n = std::string("ip -n ") + kSrc + " ";
    must("ip link add netnsv0 address 02:00:00:77:00:01 type veth peer name eth0 netns " +
         std::string(kSrc));
    must("ip link set netnsv0 master netnsbr1 mtu 1400 up");
    must("ip addr add 10.77.0.1/24 dev netnsbr1");
    // One ip process for the namespace's own configuration.
    must(n +
         "-batch - <<'EOF'\n"
         "link set lo up\n"
         "link set eth0 address 02:00:00:77:00:02 mtu 1400 txqueuelen 500 up\n"
         "link add br0 address 02:00:00:77:00:03 type bridge stp_state 0 forward_delay 700\n"
         "link set br0 up alias inner-bridge\n"
         "addr add 10.77.0.2/24 dev eth0\n"
         "addr add 10.77.0.3/24 dev eth0\n"  // secondary
         "addr add fd77::2/64 dev eth0 nodad\n"
         "addr add 10.78.0.1/24 brd + dev br0 label br0:x\n"
         "addr add fd78::1/64 dev br0 nodad noprefixroute\n"
         "route add default via 10.77.0.1 metric 10\n"
         "route add 10.90.0.0/16 via 10.77.0.1 table 100 metric 5 mtu 1300\n"
         "route add blackhole 10.91.0.0/16 table 100\n"
         "route add 10.92.0.0/16 via 10.90.0.1 table 100 onlink dev eth0\n"
         "route add fd90::/64 via fd77::1 table 100 metric 7\n"
         "route add default via fd77::1\n"
         "rule add from 10.78.0.0/24 lookup 100 pref 1000\n"
         "rule add not fwmark 0x7 lookup 100 pref 1001\n"
         "neigh add 10.77.0.9 lladdr 02:00:00:77:00:99 dev eth0 nud permanent\n"
         "neigh add fd77::9 lladdr 02:00:00:77:00:98 dev eth0 nud permanent\n"
         "EOF");
    must(n + "-6 rule add to fd90::/64 lookup 100 pref 1002");
    must("ip netns exec " + std::string(kSrc) +
         " nft 'add table inet netnsfw; "
         "add chain inet netnsfw input { type filter hook input priority 0; policy accept; }; "
         "add set inet netnsfw blocked { type ipv4_addr; elements = { 192.0.2.1, 192.0.2.2 }; }; "
         "add rule inet netnsfw input ip saddr @blocked counter drop; "
         "add rule inet netnsfw input tcp dport 2222 counter drop'");
    if (have("iptables-legacy"))
      must("ip netns exec " + std::string(kSrc) +
           " iptables-legacy -A INPUT -p tcp --dport 3333 -j DROP");
    must("ip netns exec " + std::string(kSrc) +
         " sysctl -q -w net.ipv4.ip_forward=1 net.core.somaxconn=1234"
         " net.ipv4.conf.eth0.rp_filter=2 net.ipv6.conf.eth0.hop_limit=33"
         " net.ipv4.conf.default.arp_announce=1 net.ipv6.conf.all.accept_ra=0");
  }

  img::NetNs dump_source() {
    UniqueFd fd = ns_fd(kSrc);
    return dump_netns(fd.get());
  }

  // Deletes the source (as on the old host) and makes the fresh target.
  void replace_source() {
    must(std::string("ip netns del ") + kSrc);
    // The host-side veth end goes with its peer's namespace, asynchronously.
    for (int i = 0; i < 50 && link_exists("netnsv0"); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    must(std::string("ip netns add ") + kDst);
  }

  void restore(const img::NetNs& img, const NetRestoreOptions& opts = {}) {
    UniqueFd fd = ns_fd(kDst);
    restore_netns(fd.get(), img, opts);
  }
};

// The restore bridges a namespace's veths last, instead of locking it, only
// when every one of them has a bridge to go to: an unbridged host end would
// be reachable from the start.
TEST(NetnsBridgeLate, OnlyWhenEveryVethHasABridge) {
  img::NetNs ns;
  auto* lo = ns.add_links();
  lo->set_name("lo");
  auto* v = ns.add_links();
  v->set_name("eth0");
  v->set_kind("veth");
  v->mutable_peer()->set_name("veth-c1");
  NetRestoreOptions opts;
  EXPECT_FALSE(all_veths_bridged(ns, opts));  // no bridge in the dump nor given
  opts.bridge = "br0";
  EXPECT_TRUE(all_veths_bridged(ns, opts));
  opts.bridge.clear();
  v->mutable_peer()->set_master("br7");  // the dumped peer's bridge
  EXPECT_TRUE(all_veths_bridged(ns, opts));
  auto* w = ns.add_links();
  w->set_name("eth1");
  w->set_kind("veth");
  EXPECT_FALSE(all_veths_bridged(ns, opts));
  w->set_builtin(true);  // the kernel's own, not a peer on the host
  EXPECT_TRUE(all_veths_bridged(ns, opts));
}

TEST_F(NetnsTest, RoundTripIsIdentical) {
  make_source();
  img::NetNs img = dump_source();
  std::string before = snapshot(kSrc);
  std::string host_before = sh("ip -d link show netnsv0 | head -1");
  replace_source();
  restore(img);
  std::string after = replace(snapshot(kDst), kDst, kSrc);
  EXPECT_TRUE(before == after) << diff(before, after);
  // The host side is back on its bridge, up, with its MAC and MTU.
  std::string host_after = sh("ip -d link show netnsv0 | head -1");
  EXPECT_EQ(replace(host_before, R"(^\d+:)", ""), replace(host_after, R"(^\d+:)", ""));
  EXPECT_NE(host_after.find("master netnsbr1"), std::string::npos) << host_after;
  // And traffic flows: the bridge on our side reaches the restored address.
  must("ping -c1 -W2 10.77.0.2 >/dev/null");
}

TEST_F(NetnsTest, ImageRoundTripsThroughNetnsImg) {
  make_source();
  char dir[] = "/tmp/netns-img-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  img::NetNs back;
  {
    image::DirSink sink(dir);
    save_netns_image(sink, dump_source());
    sink.commit();
    back = load_netns_image(image::DirSource(dir));
  }
  sh(std::string("rm -rf ") + dir);
  EXPECT_EQ(back.links_size(), 3);  // lo, eth0, br0
  EXPECT_EQ(back.addresses_size(), 8);
  EXPECT_GE(back.routes_size(), 5);
  EXPECT_NE(back.nftables().find("netnsfw"), std::string::npos);
  bool veth = false;
  for (const auto& l : back.links())
    if (l.kind() == "veth") {
      veth = true;
      EXPECT_EQ(l.peer().name(), "netnsv0");
      EXPECT_EQ(l.peer().master(), "netnsbr1");
      EXPECT_EQ(l.peer().mac(), std::string("\x02\x00\x00\x77\x00\x01", 6));
    }
  EXPECT_TRUE(veth);
}

TEST_F(NetnsTest, BridgeOverrideMovesTheHostSide) {
  make_source();
  img::NetNs img = dump_source();
  replace_source();
  must("ip link add netnsbr2 type bridge && ip link set netnsbr2 up");
  NetRestoreOptions opts;
  opts.bridge = "netnsbr2";
  opts.host_ifname = "netnsv1";
  restore(img, opts);
  std::string host = sh("ip link show netnsv1");
  EXPECT_NE(host.find("master netnsbr2"), std::string::npos) << host;
  EXPECT_NE(host.find("state UP"), std::string::npos) << host;
  EXPECT_FALSE(link_exists("netnsv0"));

  remove_restored_netns_links(img, opts);
  EXPECT_FALSE(link_exists("netnsv1"));
}

TEST_F(NetnsTest, MissingBridgeIsAClearError) {
  make_source();
  img::NetNs img = dump_source();
  replace_source();
  NetRestoreOptions opts;
  opts.bridge = "netnsbr2";
  try {
    restore(img, opts);
    FAIL() << "restore onto a missing bridge succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bridge netnsbr2 does not exist"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(link_exists("netnsv0"));
}

TEST_F(NetnsTest, FailedRestoreRemovesTheHostVeth) {
  make_source();
  img::NetNs img = dump_source();
  replace_source();
  // A route whose gateway no link reaches: fails after the veth is made.
  img::Route* r = img.add_routes();
  r->set_family(AF_INET);
  r->set_dst_len(24);
  r->set_table(254);
  r->set_protocol(4);
  r->set_type(1);
  img::RtAttr* dst = r->add_attrs();
  dst->set_type(1);  // RTA_DST
  dst->set_value(std::string("\xc6\x33\x64\x00", 4));
  img::RtAttr* gw = r->add_attrs();
  gw->set_type(5);  // RTA_GATEWAY
  gw->set_value(std::string("\xc6\x33\x63\x01", 4));
  try {
    restore(img);
    FAIL() << "restore with an unreachable gateway succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("198.51.100.0/24"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(link_exists("netnsv0"));
}

TEST_F(NetnsTest, NotFreshTargetIsRefused) {
  make_source();
  img::NetNs img = dump_source();
  replace_source();
  must(std::string("ip -n ") + kDst + " link add br9 type bridge");
  try {
    restore(img);
    FAIL() << "restore into a used namespace succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not fresh"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(link_exists("netnsv0"));
}

TEST_F(NetnsTest, UnsupportedLinkKindIsAClearError) {
  must(std::string("ip netns add ") + kSrc);
  int st = 0;
  sh(std::string("ip -n ") + kSrc + " link add ifb7 type ifb", &st);
  if (st != 0) GTEST_SKIP() << "no ifb links in this kernel";
  try {
    dump_source();
    FAIL() << "dump of an ifb link succeeded";
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("link ifb7"), std::string::npos) << what;
    EXPECT_NE(what.find("'ifb' is not supported"), std::string::npos) << what;
  }
}

TEST(NetOptions, Parse) {
  NetRestoreOptions o = parse_net_options("bridge=br2,host_ifname=veth-c1");
  EXPECT_EQ(o.bridge, "br2");
  EXPECT_EQ(o.host_ifname, "veth-c1");
  EXPECT_EQ(parse_net_options("bridge=br9").bridge, "br9");
  EXPECT_TRUE(parse_net_options("").bridge.empty());
  EXPECT_THROW(parse_net_options("bridge="), UsageError);
  EXPECT_THROW(parse_net_options("bridge=a-name-that-is-too-long"), UsageError);
  EXPECT_THROW(parse_net_options("vlan=5"), UsageError);
}

}  // namespace
}  // namespace ckpt
