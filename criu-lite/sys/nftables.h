// An owner for a libnftables context whose output and errors are buffered,
// so that a command's result and its error text come back as strings. A
// batch of commands is one transaction (all of it applies, or none). The
// context talks to the network namespace of the thread that created it.
#pragma once

#include <string>
#include <vector>

#include "sys/fd.h"

struct nft_ctx;

namespace ckpt {

class NftCtx {
 public:
  NftCtx();
  ~NftCtx();
  NftCtx(const NftCtx&) = delete;
  NftCtx& operator=(const NftCtx&) = delete;

  // Dry run: the kernel checks the commands in a transaction that is then
  // aborted; nothing changes.
  void set_dry_run(bool dry);
  // Runs commands in nft's syntax (as `nft -f`); returns what they print.
  // Throws Error("nftables: WHAT: " and the first line of nft's message).
  std::string run(const std::string& commands, const std::string& what = "");
  // The same, but false and that message instead of a throw.
  bool try_run(const std::string& commands, std::string* err);

 private:
  nft_ctx* ctx_;
};

// The nftables tables of the calling thread's network namespace, from one
// NFT_MSG_GETTABLE dump over nfnetlink: no ruleset is fetched or printed
// (which libnftables does for "list ruleset", ~3-5 ms even when empty).
struct NftTable {
  int family = 0;  // NFPROTO_*
  std::string name;
};
std::vector<NftTable> list_nft_tables();

// An nfnetlink socket of the calling thread's network namespace; it stays
// that namespace's wherever it is used from.
UniqueFd nfnetlink_socket();
// Sets the policy of existing base chains of table (family NFPROTO_*) in
// one transaction over sk: one small batch, no ruleset cache (libnftables
// takes about a millisecond for the same). Throws on any refusal.
void set_chain_policies(int sk, int family, const std::string& table,
                        const std::vector<std::string>& chains, bool accept);

}  // namespace ckpt
