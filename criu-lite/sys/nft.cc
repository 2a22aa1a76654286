#include "sys/nft.h"

#include <nftables/libnftables.h>

#include "sys/error.h"

namespace ckpt {

Nft::Nft() {
  ctx_ = nft_ctx_new(NFT_CTX_DEFAULT);
  if (!ctx_) throw Error("nftables: cannot create a libnftables context");
  // Messages go to buffers we read, not to our stdout/stderr.
  nft_ctx_buffer_output(ctx_);
  nft_ctx_buffer_error(ctx_);
}

Nft::~Nft() {
  nft_ctx_free(ctx_);
}

bool Nft::try_run(const std::string& cmds, std::string* err) {
  if (nft_run_cmd_from_buffer(ctx_, cmds.c_str()) == 0) return true;
  std::string msg = nft_ctx_get_error_buffer(ctx_);
  // nft repeats the offending command under the message: keep the first line.
  if (auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
  if (msg.rfind("Error: ", 0) == 0) msg.erase(0, 7);
  if (err) *err = msg.empty() ? "failed" : msg;
  return false;
}

void Nft::run(const std::string& cmds, const std::string& what) {
  std::string err;
  if (!try_run(cmds, &err)) throw Error("nftables: " + what + ": " + err);
}

}  // namespace ckpt
