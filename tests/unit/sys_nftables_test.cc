// nftables tables listed over nfnetlink (sys/nftables.h), in a namespace
// of the test's own.
#include <gtest/gtest.h>

#include <algorithm>

#include "sys/netns_exec.h"
#include "sys/nftables.h"

namespace ckpt {
namespace {

TEST(NftTables, ListsFamilyAndName) {
  UniqueFd ns = new_netns();
  run_in_netns(ns.get(), [] {
    EXPECT_TRUE(list_nft_tables().empty());
    NftCtx nft;
    nft.run("add table inet ckpt_t1\nadd table ip filter4\nadd table ip6 other6\n");
    std::vector<NftTable> t = list_nft_tables();
    ASSERT_EQ(t.size(), 3u);
    auto has = [&](int family, const char* name) {
      return std::any_of(t.begin(), t.end(),
                         [&](const NftTable& x) { return x.family == family && x.name == name; });
    };
    EXPECT_TRUE(has(1 /* NFPROTO_INET */, "ckpt_t1"));
    EXPECT_TRUE(has(2 /* NFPROTO_IPV4 */, "filter4"));
    EXPECT_TRUE(has(10 /* NFPROTO_IPV6 */, "other6"));
  });
}

}  // namespace
}  // namespace ckpt
