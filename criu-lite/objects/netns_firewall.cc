// The firewall of a network namespace (objects/netns.h): the nftables
// ruleset through libnftables, and legacy iptables rules through
// iptables-legacy-save/-restore when the legacy tables are in use.
//
// The ruleset is kept in nft's own text syntax (what `nft list ruleset`
// prints and `nft -f` reads back), the format nft guarantees to load again;
// check_firewall_in_ns proves that at dump time with a dry run.
#include <algorithm>
#include <string>
#include <vector>

#include "objects/net_lock.h"
#include "objects/netns_parts.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"
#include "sys/netns_exec.h"
#include "sys/nftables.h"

namespace ckpt::netns {

namespace {

struct LegacyFamily {
  const char* names;  // tables in use, in the thread's namespace
  const char* save;
  const char* restore;
};
constexpr LegacyFamily kLegacy[] = {
    {"/proc/thread-self/net/ip_tables_names", "iptables-legacy-save", "iptables-legacy-restore"},
    {"/proc/thread-self/net/ip6_tables_names", "ip6tables-legacy-save", "ip6tables-legacy-restore"},
};

// Comment lines carry the date and version of the save: left out so that
// two saves of the same rules are equal.
std::string without_comments(const std::string& text) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line[0] == '#') continue;
    out += line + "\n";
  }
  return out;
}

std::string dump_legacy(const LegacyFamily& f) {
  std::string tables;
  if (!try_read_file(f.names, &tables) || tables.empty()) return {};
  if (!have_program(f.save))
    throw Error(strfmt("legacy iptables tables are in use (%s) but %s is not installed",
                       tables.substr(0, tables.find('\n')).c_str(), f.save));
  ProgramResult r = run_program({f.save, "-c"});
  if (!r.ok()) throw Error(std::string(f.save) + ": " + r.describe());
  return without_comments(r.out);
}

void restore_legacy(const LegacyFamily& f, const std::string& rules) {
  if (rules.empty()) return;
  ProgramResult r = run_program({f.restore, "-c"}, rules);
  if (!r.ok()) throw Error(std::string(f.restore) + ": " + r.describe());
}

}  // namespace

void dump_firewall_in_ns(NftCtx& nft, img::NetNs* ns) {
  // A dump with --tcp-established has locked the namespace by now. A
  // namespace with no table but that lock has nothing to save: asking which
  // tables there are costs far less than listing the ruleset.
  std::vector<NftTable> tables = list_nft_tables();
  bool only_locks = std::all_of(tables.begin(), tables.end(),
                                [](const NftTable& t) { return is_lock_table(t.family, t.name); });
  ns->set_nftables(only_locks ? std::string() : without_lock_tables(nft.run("list ruleset")));
  ns->set_iptables_legacy(in_context("iptables", [] { return dump_legacy(kLegacy[0]); }));
  ns->set_ip6tables_legacy(in_context("ip6tables", [] { return dump_legacy(kLegacy[1]); }));
}

void check_firewall_in_ns(const img::NetNs& ns) {
  if (ns.nftables().empty()) return;
  in_context("nftables ruleset would not load back", [&] {
    NftCtx nft;
    nft.set_dry_run(true);
    nft.run(ns.nftables());
  });
}

void restore_firewall_in_ns(const img::NetNs& ns) {
  if (!ns.nftables().empty()) {
    in_context("nftables", [&] {
      NftCtx nft;
      nft.run(ns.nftables());
    });
  }
  in_context("iptables", [&] { restore_legacy(kLegacy[0], ns.iptables_legacy()); });
  in_context("ip6tables", [&] { restore_legacy(kLegacy[1], ns.ip6tables_legacy()); });
}

}  // namespace ckpt::netns
