// objects/cgroup: the limits of a container's cgroup saved into a
// CgroupImage and set again on a new cgroup (skipped unless root).
#include "objects/cgroup.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "sys/error.h"

namespace ckpt {
namespace {

TEST(CgroupImage, LimitsConvertBothWays) {
  cgroup::Limits l;
  l.memory_max = 1 << 20;
  l.cpu_quota_us = 20000;
  l.cpu_period_us = 100000;
  img::CgroupImage im = to_image(l);
  EXPECT_TRUE(im.has_memory_max());
  EXPECT_FALSE(im.has_pids_max()) << "an unset limit must stay absent, not 0";
  EXPECT_FALSE(im.has_cpu_shares());
  EXPECT_EQ(from_image(im), l);
  EXPECT_EQ(from_image(img::CgroupImage{}), cgroup::Limits{});
}

TEST(CgroupImage, DumpAndRestore) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  const cgroup::Layout& lay = cgroup::layout();
  if (!lay.v2 && lay.v1.empty()) GTEST_SKIP() << "no cgroup file system";
  std::string base = "run-" + std::to_string(getpid());
  cgroup::Cgroup src = cgroup::Cgroup::create(base + "-src");
  cgroup::Limits l;
  l.memory_max = 48ull << 20;
  l.pids_max = 77;
  l.cpu_shares = 256;
  src.set_limits(l);
  img::CgroupImage im = dump_cgroup(src);
  EXPECT_EQ(im.memory_max(), 48ull << 20);
  EXPECT_EQ(im.pids_max(), 77u);

  std::vector<std::string> paths;
  {
    cgroup::Cgroup dst = restore_cgroup(base + "-dst", im);
    paths = dst.paths();
    EXPECT_EQ(dst.limits(), src.limits());
    EXPECT_TRUE(dst.owned());
  }
  for (const auto& p : paths) EXPECT_NE(access(p.c_str(), F_OK), 0) << p << " left behind";

  // A limit the machine refuses: restore fails and leaves no cgroup.
  img::CgroupImage bad;
  bad.set_cpu_quota_us(1);
  try {
    restore_cgroup(base + "-bad", bad);
    FAIL() << "a 1 us quota was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("restore cgroup " + base + "-bad"), std::string::npos)
        << e.what();
  }
  for (const auto& p : paths) {
    std::string bad_dir = p.substr(0, p.rfind('/')) + "/" + base + "-bad";
    EXPECT_NE(access(bad_dir.c_str(), F_OK), 0) << bad_dir << " left behind";
  }
}

}  // namespace
}  // namespace ckpt
