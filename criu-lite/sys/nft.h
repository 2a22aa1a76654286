// nftables through libnftables: a context that runs a batch of nft commands
// as one transaction (all of it applies, or none).
#pragma once

#include <string>

struct nft_ctx;

namespace ckpt {

class Nft {
 public:
  Nft();
  ~Nft();
  Nft(const Nft&) = delete;
  Nft& operator=(const Nft&) = delete;
  // Runs cmds (nft syntax, one command a line); throws Error with nft's own
  // message and `what` on failure.
  void run(const std::string& cmds, const std::string& what);
  // Same, but returns false and the message instead of throwing.
  bool try_run(const std::string& cmds, std::string* err);

 private:
  nft_ctx* ctx_ = nullptr;
};

}  // namespace ckpt
