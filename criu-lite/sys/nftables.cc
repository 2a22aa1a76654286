#include "sys/nftables.h"

#include <nftables/libnftables.h>

#include "sys/error.h"

namespace ckpt {

NftCtx::NftCtx() : ctx_(nft_ctx_new(NFT_CTX_DEFAULT)) {
  if (!ctx_) throw Error("nft_ctx_new failed");
  if (nft_ctx_buffer_output(ctx_) != 0 || nft_ctx_buffer_error(ctx_) != 0) {
    nft_ctx_free(ctx_);
    throw Error("nft: cannot buffer output");
  }
}

NftCtx::~NftCtx() {
  nft_ctx_free(ctx_);
}

void NftCtx::set_dry_run(bool dry) {
  nft_ctx_set_dry_run(ctx_, dry);
}

std::string NftCtx::run(const std::string& commands) {
  int rc = nft_run_cmd_from_buffer(ctx_, commands.c_str());
  std::string out = nft_ctx_get_output_buffer(ctx_);
  if (rc != 0) {
    std::string err = nft_ctx_get_error_buffer(ctx_);
    while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
    throw Error("nft: " + (err.empty() ? std::string("failed") : err));
  }
  return out;
}

}  // namespace ckpt
