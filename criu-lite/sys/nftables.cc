#include "sys/nftables.h"

#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <nftables/libnftables.h>
#include <sys/socket.h>
#include <unistd.h>

#include <endian.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "sys/error.h"
#include "sys/fd.h"

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

bool NftCtx::try_run(const std::string& commands, std::string* err) {
  if (nft_run_cmd_from_buffer(ctx_, commands.c_str()) == 0) return true;
  std::string msg = nft_ctx_get_error_buffer(ctx_);
  // nft repeats the offending command under the message: keep the first line.
  if (auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
  if (msg.rfind("Error: ", 0) == 0) msg.erase(0, 7);
  if (err) *err = msg.empty() ? "failed" : msg;
  return false;
}

std::string NftCtx::run(const std::string& commands, const std::string& what) {
  std::string err;
  if (!try_run(commands, &err))
    throw Error("nftables: " + (what.empty() ? std::string() : what + ": ") + err);
  return nft_ctx_get_output_buffer(ctx_);
}

UniqueFd nfnetlink_socket() {
  UniqueFd sk(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER));
  if (!sk) throw_errno("nfnetlink socket");
  return sk;
}

std::vector<NftTable> list_nft_tables() {
  UniqueFd sk = nfnetlink_socket();
  struct {
    nlmsghdr h;
    nfgenmsg g;
  } req{};
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.h.nlmsg_seq = 1;
  req.g.nfgen_family = AF_UNSPEC;
  req.g.version = NFNETLINK_V0;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(sk.get(), &req, sizeof req, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) <
      0)
    throw_errno("nfnetlink: ask for the nftables tables");
  std::vector<NftTable> out;
  alignas(nlmsghdr) char buf[16384];
  for (;;) {
    ssize_t n = recv(sk.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("nfnetlink: read the nftables tables");
    auto len = static_cast<unsigned>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type == NLMSG_DONE) return out;
      if (h->nlmsg_type == NLMSG_ERROR) {
        const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
        throw_errno(-e->error, "nfnetlink: list the nftables tables");
      }
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nfgenmsg))) continue;
      const auto* g = static_cast<const nfgenmsg*>(NLMSG_DATA(h));
      NftTable t;
      t.family = g->nfgen_family;
      // Attributes follow the nfgenmsg.
      size_t off = NLMSG_LENGTH(sizeof(nfgenmsg));
      off = NLMSG_ALIGN(off);
      while (off + sizeof(nlattr) <= h->nlmsg_len) {
        const auto* a = reinterpret_cast<const nlattr*>(reinterpret_cast<const char*>(h) + off);
        if (a->nla_len < sizeof(nlattr) || off + a->nla_len > h->nlmsg_len) break;
        if ((a->nla_type & NLA_TYPE_MASK) == NFTA_TABLE_NAME) {
          const char* v = reinterpret_cast<const char*>(a) + NLA_HDRLEN;
          t.name.assign(v, strnlen(v, a->nla_len - NLA_HDRLEN));
        }
        off += NLA_ALIGN(a->nla_len);
      }
      out.push_back(std::move(t));
    }
  }
}

namespace {
// Appends one netlink message (header, nfgenmsg, then attributes).
class NlBatch {
 public:
  // Sequence numbers of its messages: first+1 onwards.
  explicit NlBatch(uint32_t first) : seq_(first) {}
  void begin(uint16_t type, uint16_t flags, uint8_t family, uint16_t res_id) {
    start_ = buf_.size();
    nlmsghdr h{};
    h.nlmsg_type = type;
    h.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
    h.nlmsg_seq = ++seq_;
    put(&h, sizeof h);
    nfgenmsg g{};
    g.nfgen_family = family;
    g.version = NFNETLINK_V0;
    g.res_id = htobe16(res_id);
    put(&g, sizeof g);
  }
  void attr(uint16_t type, const void* data, size_t len) {
    nlattr a{};
    a.nla_type = type;
    a.nla_len = static_cast<uint16_t>(NLA_HDRLEN + len);
    put(&a, sizeof a);
    put(data, len);
    buf_.resize(NLA_ALIGN(buf_.size()));
  }
  void end() {
    buf_.resize(NLMSG_ALIGN(buf_.size()));
    reinterpret_cast<nlmsghdr*>(buf_.data() + start_)->nlmsg_len =
        static_cast<uint32_t>(buf_.size() - start_);
  }
  const std::vector<char>& bytes() const { return buf_; }

 private:
  void put(const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    buf_.insert(buf_.end(), c, c + n);
  }
  std::vector<char> buf_;
  size_t start_ = 0;
  uint32_t seq_;
};
}  // namespace

void set_chain_policies(int sk, int family, const std::string& table,
                        const std::vector<std::string>& chains, bool accept) {
  // Numbers of its own: an answer left from an earlier batch that failed
  // half-way is not counted as this one's.
  static std::atomic<uint32_t> next_seq{1};
  uint32_t first = next_seq.fetch_add(static_cast<uint32_t>(chains.size() + 2));
  NlBatch b(first);
  b.begin(NFNL_MSG_BATCH_BEGIN, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
  b.end();
  uint32_t policy = htobe32(accept ? NF_ACCEPT : NF_DROP);
  for (const auto& c : chains) {
    // An update of the existing base chain: only its policy changes.
    b.begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWCHAIN, NLM_F_ACK, static_cast<uint8_t>(family),
            0);
    b.attr(NFTA_CHAIN_TABLE, table.c_str(), table.size() + 1);
    b.attr(NFTA_CHAIN_NAME, c.c_str(), c.size() + 1);
    b.attr(NFTA_CHAIN_POLICY, &policy, sizeof policy);
    b.end();
  }
  b.begin(NFNL_MSG_BATCH_END, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
  b.end();
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  std::string what = "nfnetlink: set the policy of " + table + "'s chains";
  if (sendto(sk, b.bytes().data(), b.bytes().size(), 0, reinterpret_cast<sockaddr*>(&kernel),
             sizeof kernel) < 0)
    throw_errno(what);
  // One acknowledgement per chain (a failed batch answers with its error).
  size_t acks = 0;
  alignas(nlmsghdr) char buf[4096];
  while (acks < chains.size()) {
    ssize_t n = recv(sk, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno(what);
    auto len = static_cast<unsigned>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type != NLMSG_ERROR) continue;
      if (h->nlmsg_seq <= first || h->nlmsg_seq > first + chains.size() + 2) continue;
      const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
      if (e->error != 0) throw_errno(-e->error, what);
      acks++;
    }
  }
}

}  // namespace ckpt
