// sys/cgroup: parsers fed captured text, and the live operations on this
// machine's cgroups (skipped unless root). Cgroup names start with "run-"
// and the test's pid, so parallel runs do not collide.
#include "sys/cgroup.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "sys/error.h"

namespace ckpt::cgroup {
namespace {

const char kHybridMountinfo[] =
    "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
    "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "36 30 0:33 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n"
    "38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
    "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
    // A second mount of the memory hierarchy, of a subtree: not preferred.
    "41 22 0:31 /sub /mnt/mem\\040x rw,relatime - cgroup cgroup rw,memory\n";

TEST(CgroupParse, HybridMountinfo) {
  Layout l = parse_mountinfo(kHybridMountinfo);
  ASSERT_TRUE(l.v2);
  EXPECT_EQ(l.v2->mount, "/sys/fs/cgroup/unified");
  ASSERT_EQ(l.v1.size(), 5u);
  ASSERT_NE(l.v1_with("memory"), nullptr);
  EXPECT_EQ(l.v1_with("memory")->mount, "/sys/fs/cgroup/memory");
  EXPECT_EQ(l.v1_with("freezer")->mount, "/sys/fs/cgroup/freezer");
  EXPECT_EQ(l.v1_with("name=systemd")->mount, "/sys/fs/cgroup/systemd");
  EXPECT_EQ(l.v1_with("cpuacct"), nullptr);
  EXPECT_EQ(l.v1_with("xattr"), nullptr);
}

TEST(CgroupParse, CombinedControllersAndEscapes) {
  Layout l = parse_mountinfo(
      "31 30 0:28 /sub /mnt/a\\040b rw - cgroup cgroup rw,cpu,cpuacct\n"
      "32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n");
  EXPECT_FALSE(l.v2);
  ASSERT_EQ(l.v1.size(), 1u);
  EXPECT_EQ(l.v1[0].mount, "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_TRUE(l.v1[0].has("cpu"));
  EXPECT_TRUE(l.v1[0].has("cpuacct"));

  Layout only_sub = parse_mountinfo("31 30 0:28 /sub /mnt/a\\040b rw - cgroup cgroup rw,cpu\n");
  EXPECT_EQ(only_sub.v1[0].mount, "/mnt/a b");
  EXPECT_EQ(only_sub.v1[0].root, "/sub");
}

TEST(CgroupParse, PureV2) {
  Layout l = parse_mountinfo("25 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
  ASSERT_TRUE(l.v2);
  EXPECT_EQ(l.v2->mount, "/sys/fs/cgroup");
  EXPECT_TRUE(l.v1.empty());
}

TEST(CgroupParse, ProcCgroup) {
  Membership m = parse_proc_cgroup(
      "9:name=systemd:/\n4:memory:/process_api/1eda\n1:cpu,cpuacct:/a b\n0::/user.slice\n");
  EXPECT_EQ(m.v2, "/user.slice");
  EXPECT_EQ(m.v1_path("memory").value(), "/process_api/1eda");
  EXPECT_EQ(m.v1_path("cpuacct").value(), "/a b");
  EXPECT_EQ(m.v1_path("name=systemd").value(), "/");
  EXPECT_FALSE(m.v1_path("pids"));
  EXPECT_THROW(parse_proc_cgroup("garbage\n"), Error);
}

TEST(CgroupParse, SharesAndWeight) {
  EXPECT_EQ(shares_to_weight(2), 1u);
  EXPECT_EQ(shares_to_weight(262144), 10000u);
  EXPECT_EQ(shares_to_weight(1024), 39u);
  EXPECT_EQ(weight_to_shares(1), 2u);
  EXPECT_EQ(weight_to_shares(10000), 262144u);
  EXPECT_NEAR(static_cast<double>(shares_to_weight(weight_to_shares(500))), 500, 1);
}

// ---- live ----------------------------------------------------------------

// A forked child that increments a shared counter as fast as it can;
// killed and reaped on scope exit.
class Spinner {
 public:
  Spinner() {
    void* p = mmap(nullptr, sizeof(std::atomic<uint64_t>), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw_errno("mmap");
    counter_ = new (p) std::atomic<uint64_t>(0);
    pid_ = fork();
    if (pid_ < 0) throw_errno("fork");
    if (pid_ == 0) {
      for (;;) counter_->fetch_add(1, std::memory_order_relaxed);
    }
  }
  ~Spinner() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    munmap(counter_, sizeof *counter_);
  }
  pid_t pid() const { return pid_; }
  uint64_t count() const { return counter_->load(); }
  // True if the counter moves within a while.
  bool moving() const {
    uint64_t a = count();
    for (int i = 0; i < 50; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      if (count() != a) return true;
    }
    return false;
  }

 private:
  pid_t pid_ = -1;
  std::atomic<uint64_t>* counter_ = nullptr;
};

class CgroupLive : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    const Layout& l = layout();
    if (!l.v2 && l.v1.empty()) GTEST_SKIP() << "no cgroup file system";
  }
  static std::string name(const char* what) {
    return "run-" + std::to_string(getpid()) + "-" + what;
  }
  static bool gone(const std::vector<std::string>& paths) {
    for (const auto& p : paths)
      if (access(p.c_str(), F_OK) == 0) return false;
    return true;
  }
};

TEST_F(CgroupLive, CreateAttachFreezeThawDestroy) {
  Cgroup cg = Cgroup::create(name("freeze"));
  std::vector<std::string> paths = cg.paths();
  ASSERT_FALSE(paths.empty());
  {
    Spinner s;
    cg.attach(s.pid());
    std::vector<pid_t> procs = cg.procs();
    ASSERT_EQ(procs.size(), 1u);
    EXPECT_EQ(procs[0], s.pid());
    ASSERT_TRUE(s.moving());

    cg.freeze();
    EXPECT_TRUE(cg.frozen());
    EXPECT_FALSE(s.moving()) << "the child ran while its cgroup was frozen";
    cg.thaw();
    EXPECT_FALSE(cg.frozen());
    EXPECT_TRUE(s.moving()) << "the child did not run again after the thaw";
  }
  cg.destroy();
  EXPECT_TRUE(cg.empty());
  EXPECT_TRUE(gone(paths));
}

TEST_F(CgroupLive, FreezeIncludesSubCgroups) {
  Cgroup cg = Cgroup::create(name("sub"));
  std::string sub = cg.freezer_dir().path + "/inner";
  ASSERT_EQ(mkdir(sub.c_str(), 0755), 0);
  std::vector<std::string> paths = cg.paths();
  {
    Spinner s;
    Cgroup::of_path(sub).attach(s.pid());
    ASSERT_TRUE(s.moving());
    std::vector<pid_t> procs = cg.procs();
    ASSERT_EQ(procs.size(), 1u) << "procs() must include sub-cgroups";
    cg.freeze();
    EXPECT_FALSE(s.moving()) << "a task of a sub-cgroup ran while the parent was frozen";
    cg.thaw();
    EXPECT_TRUE(s.moving());
  }
  cg.destroy();  // removes inner/ first
  EXPECT_TRUE(gone(paths));
}

TEST_F(CgroupLive, OfPathFreezesAnyCgroup) {
  Cgroup cg = Cgroup::create(name("ofpath"));
  Spinner s;
  cg.attach(s.pid());
  Cgroup other = Cgroup::of_path(cg.freezer_dir().path + "/");
  EXPECT_FALSE(other.owned());
  other.freeze();
  EXPECT_FALSE(s.moving());
  EXPECT_TRUE(cg.frozen());
  other.thaw();
  EXPECT_TRUE(s.moving());
  EXPECT_THROW(Cgroup::of_path("/proc"), Error);
}

TEST_F(CgroupLive, LimitsRoundTrip) {
  Cgroup cg = Cgroup::create(name("limits"));
  EXPECT_EQ(cg.limits(), Limits{}) << "a new cgroup has no limits set";
  Limits l;
  l.memory_max = 64ull << 20;
  l.pids_max = 50;
  l.cpu_quota_us = 50000;
  l.cpu_period_us = 100000;
  l.cpu_shares = 512;
  cg.set_limits(l);
  Limits back = cg.limits();
  EXPECT_EQ(back.memory_max, l.memory_max);
  EXPECT_EQ(back.pids_max, l.pids_max);
  EXPECT_EQ(back.cpu_quota_us, l.cpu_quota_us);
  EXPECT_EQ(back.cpu_period_us, l.cpu_period_us);
  // Shares or weight, whichever the hierarchy has.
  if (back.cpu_weight)
    EXPECT_EQ(*back.cpu_weight, shares_to_weight(512));
  else
    EXPECT_EQ(back.cpu_shares, 512u);

  // Reopened from its paths (as a state file would), it reads the same.
  Cgroup again = Cgroup::open(cg.paths());
  EXPECT_EQ(again.limits(), back);
}

TEST_F(CgroupLive, CleanupOnFailure) {
  std::vector<std::string> paths;
  try {
    Cgroup cg = Cgroup::create(name("fail"));
    paths = cg.paths();
    Limits bad;
    bad.cpu_quota_us = 1;  // below the kernel's minimum of 1 ms
    cg.set_limits(bad);
    FAIL() << "a 1 us quota was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cpu"), std::string::npos) << e.what();
  }
  ASSERT_FALSE(paths.empty());
  EXPECT_TRUE(gone(paths)) << "an owned cgroup was left behind after a failure";
}

TEST_F(CgroupLive, ReleasedOutlivesOwnerAndCreateRefusesExisting) {
  std::vector<std::string> paths;
  {
    Cgroup cg = Cgroup::create(name("keep"));
    paths = cg.paths();
    cg.release();
  }
  EXPECT_FALSE(gone(paths));
  try {
    Cgroup::create(name("keep"));
    FAIL() << "created an existing cgroup";
  } catch (const Error& e) {
    EXPECT_EQ(e.err(), EEXIST);
  }
  EXPECT_FALSE(gone(paths)) << "a failed create removed someone else's cgroup";
  Cgroup cg = Cgroup::open(paths);
  cg.destroy(std::chrono::seconds(5), true);
  EXPECT_TRUE(gone(paths));
}

TEST_F(CgroupLive, KillEmptiesAndDestroyWaits) {
  Cgroup cg = Cgroup::create(name("kill"));
  std::vector<std::string> paths = cg.paths();
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    for (;;) pause();
  }
  cg.attach(child);
  cg.freeze();
  cg.kill(SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  cg.destroy();
  EXPECT_TRUE(gone(paths));
}

TEST_F(CgroupLive, LeftoverGoesOnlyWhenEmpty) {
  EXPECT_FALSE(Cgroup::remove_leftover(name("left"))) << "nothing of that name exists";
  std::vector<std::string> paths;
  {
    Cgroup cg = Cgroup::create(name("left"));
    paths = cg.paths();
    cg.release();  // as a killed ckpt would leave it
  }
  // A task in it: somebody's, untouched.
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    for (;;) pause();
  }
  Cgroup::open(paths).attach(child);
  EXPECT_FALSE(Cgroup::remove_leftover(name("left")));
  EXPECT_FALSE(gone(paths));
  // Killed and not reaped yet: it still counts (EBUSY) until reaped, which
  // remove_leftover waits for.
  kill(child, SIGKILL);
  std::thread reaper([child] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    waitpid(child, nullptr, 0);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  bool removed = Cgroup::remove_leftover(name("left"));
  reaper.join();
  EXPECT_TRUE(removed);
  EXPECT_TRUE(gone(paths));
}

}  // namespace
}  // namespace ckpt::cgroup
