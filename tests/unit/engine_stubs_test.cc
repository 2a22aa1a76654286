// The restore stubs (restore/stubs.h) forking a tree in a pid namespace of
// its own (pids 1..N are free there whatever else runs): a plain tree gets
// the freestanding stub program, a tree that needs ckpt's code in its stubs
// gets copies of ckpt, and both make the same sessions, groups and zombies.
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/stat.h>

#include <algorithm>
#include <optional>
#include <string>

#include "objects/files.h"
#include "restore/early_root.h"
#include "restore/plan.h"
#include "restore/stubs.h"
#include "sys/error.h"
#include "sys/proc.h"

namespace ckpt {
namespace {

// pid 1: session and group leader
//   2   in 1's group
//   3   leads a group of its own
//   |  4   born in 3's group
//   5   joins 3's group (not the one it was born in: the group phases run)
//   6   a zombie, exit status 7
RestorePlan tree_plan(bool join) {
  RestorePlan plan;
  plan.inv.mutable_namespaces()->set_pid(true);
  struct Row {
    int pid, parent, sid, pgid;
  };
  const Row rows[] = {
      {1, -1, 1, 1}, {2, 0, 1, 1}, {3, 0, 1, 3}, {4, 2, 1, 3}, {5, 0, 1, join ? 3 : 1}};
  for (const Row& r : rows) {
    PlannedTask t;
    t.entry.set_pid(r.pid);
    t.entry.set_sid(r.sid);
    t.entry.set_pgid(r.pgid);
    t.core.set_umask(022);
    t.fds.set_pid(r.pid);
    t.parent = r.parent;
    if (r.parent >= 0) plan.tasks[r.parent].children.push_back(static_cast<int>(plan.tasks.size()));
    plan.tasks.push_back(t);
  }
  PlannedZombie z;
  z.entry.set_pid(6);
  z.entry.set_sid(1);
  z.entry.set_pgid(1);
  z.entry.set_exit_status(7 << 8);
  z.parent = 0;
  plan.zombies.push_back(z);
  plan.tasks[0].zombies.push_back(0);
  return plan;
}

bool can_make_pidns() {
  pid_t p = static_cast<pid_t>(syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, 0, 0, 0, 0));
  if (p == 0) _exit(0);
  if (p < 0) return false;
  waitpid(p, nullptr, 0);
  return true;
}

img::TreePreview pidns_preview() {
  img::TreePreview p;
  p.mutable_namespaces()->set_pid(true);
  p.set_root_pid(1);
  return p;
}

// Creates the tree and checks what each process ended up as. early: from a
// root made ahead (early_root.h), which the tree takes if it can be
// freestanding.
void run_tree(RestorePlan& plan, bool want_freestanding, bool early = false) {
  if (geteuid() != 0 || !can_make_pidns()) GTEST_SKIP() << "needs root (clone3 set_tid, pid ns)";
  FileTable files;
  StubOptions opts;
  opts.root_ns_flags = CLONE_NEWPID;
  std::optional<EarlyRoot> ahead;
  if (early) {
    ASSERT_EQ(EarlyRoot::refuses(pidns_preview()), "");
    ahead.emplace(pidns_preview(), -1, nullptr);
    ASSERT_TRUE(ahead->matches(plan.inv.namespaces(), 1, nullptr, false, false));
    opts.early = &*ahead;
  }
  {
    StubTree stubs(plan, files, opts);
    EXPECT_EQ(stubs.freestanding(), want_freestanding);
    EXPECT_EQ(stubs.early_root(), early && want_freestanding);
    stubs.create(10000);
    stubs.install_files(10000);
    for (const auto& t : plan.tasks) {
      SCOPED_TRACE("pid " + std::to_string(t.pid()));
      ASSERT_GT(t.host, 0);
      proc::Status st = proc::read_status(t.host);
      ASSERT_FALSE(st.nspid.empty());
      EXPECT_EQ(st.nspid.back(), t.pid());
      EXPECT_EQ(st.nspgid.back(), static_cast<pid_t>(t.entry.pgid()));
      EXPECT_EQ(st.nssid.back(), static_cast<pid_t>(t.entry.sid()));
      EXPECT_EQ(st.umask, 022u);
      std::string maps = read_file(strfmt("/proc/%d/maps", t.host));
      size_t vmas = static_cast<size_t>(std::count(maps.begin(), maps.end(), '\n'));
      // The freestanding stub: its ELF, stack, the kernel's special
      // mappings and the control block. A copy of ckpt has a hundred.
      if (want_freestanding) {
        EXPECT_LT(vmas, 16u) << maps;
      } else {
        EXPECT_GT(vmas, 30u);
      }
      // Remote syscalls enter through the stubs' own [vdso].
      uint64_t ip = stubs.syscall_ip(static_cast<size_t>(&t - plan.tasks.data()));
      bool in_vdso = false;
      for (const auto& v : proc::parse_maps(maps))
        if (v.path == "[vdso]" && ip >= v.start && ip < v.end) in_vdso = true;
      EXPECT_TRUE(in_vdso) << std::hex << ip << "\n" << maps;
    }
    // The zombie exited with its status and waits for its parent.
    const PlannedZombie& z = plan.zombies[0];
    ASSERT_GT(z.host, 0);
    std::string stat = read_file(strfmt("/proc/%d/stat", z.host));
    EXPECT_NE(stat.find(") Z "), std::string::npos) << stat;
  }  // kills and reaps the tree
  prctl(PR_SET_CHILD_SUBREAPER, 0);
}

TEST(Stubs, PlainTreeIsForkedByTheFreestandingStub) {
  RestorePlan plan = tree_plan(false);
  run_tree(plan, true);
}

TEST(Stubs, FreestandingStubJoinsGroupsInPhases) {
  RestorePlan plan = tree_plan(true);
  run_tree(plan, true);
}

TEST(Stubs, TreeIsForkedByARootMadeAhead) {
  RestorePlan plan = tree_plan(true);
  run_tree(plan, true, true);
}

TEST(Stubs, RootMadeAheadIsDiscardedForCopiesOfCkpt) {
  // The tree needs ckpt's code in its stubs: the parked freestanding root
  // cannot be it, and goes.
  RestorePlan plan = tree_plan(false);
  plan.inv.set_shell_job(true);
  run_tree(plan, false, true);
}

TEST(Stubs, RootMadeAheadParksUntilDiscarded) {
  if (geteuid() != 0 || !can_make_pidns()) GTEST_SKIP() << "needs root (clone3 set_tid, pid ns)";
  img::TreePreview p = pidns_preview();
  p.mutable_namespaces()->set_uts(true);
  p.mutable_namespaces()->set_ipc(true);
  pid_t pid;
  {
    EarlyRoot root(p, -1, nullptr);
    RestorePlan plan = tree_plan(false);
    // What the images must say for the restore to take it.
    img::Namespaces ns = p.namespaces();
    EXPECT_TRUE(root.matches(ns, 1, nullptr, false, false));
    EXPECT_FALSE(root.matches(ns, 1, nullptr, true, false));  // a network namespace ahead
    EXPECT_FALSE(root.matches(ns, 1, nullptr, false, true));  // a cgroup
    EXPECT_FALSE(root.matches(plan.inv.namespaces(), 1, nullptr, false, false));  // no uts, ipc
    // A parked freestanding stub: pid 1 of its namespace, in new uts and
    // ipc namespaces, a few mappings only.
    pid = root.take();  // the test owns it from here, as a StubTree would
    proc::Status st = proc::read_status(pid);
    ASSERT_FALSE(st.nspid.empty());
    EXPECT_EQ(st.nspid.back(), 1);
    EXPECT_NE(read_file(strfmt("/proc/%d/comm", pid)).find("ckpt-stub"), std::string::npos);
    for (const char* k : {"uts", "ipc", "pid"}) {
      struct stat mine {
      }, its{};
      ASSERT_EQ(stat(strfmt("/proc/self/ns/%s", k).c_str(), &mine), 0);
      ASSERT_EQ(stat(strfmt("/proc/%d/ns/%s", pid, k).c_str(), &its), 0);
      EXPECT_NE(mine.st_ino, its.st_ino) << k;
    }
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  EXPECT_NE(kill(pid, 0), 0);
}

TEST(Stubs, RootMadeAheadOnlyForWhatItCanBe) {
  img::TreePreview p;
  p.set_root_pid(1234);
  EXPECT_NE(EarlyRoot::refuses(p).find("pid namespace"), std::string::npos);
  p = pidns_preview();
  p.mutable_namespaces()->set_net(true);
  EXPECT_NE(EarlyRoot::refuses(p).find("network namespace"), std::string::npos);
  p = pidns_preview();
  p.mutable_namespaces()->set_mnt(true);
  img::Mount* m = p.mutable_mnt()->add_mounts();
  m->set_kind(img::MOUNT_NEW);
  m->set_fstype("tmpfs");
  m->set_mount_point("/run");
  EXPECT_NE(EarlyRoot::refuses(p).find("tmpfs at /run"), std::string::npos);
  m->set_fstype("proc");
  if (exec_keeps_creds()) {
    EXPECT_EQ(EarlyRoot::refuses(p), "");
  }
}

TEST(Stubs, ShellJobGetsCopiesOfCkpt) {
  // A shell job keeps a session with ckpt's terminal: ckpt's code runs in
  // the stubs (tty.h).
  RestorePlan plan = tree_plan(true);
  plan.inv.set_shell_job(true);
  run_tree(plan, false);
}

}  // namespace
}  // namespace ckpt
