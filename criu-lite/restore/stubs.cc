#include "restore/stubs.h"

#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <thread>

#include "sys/error.h"
#include "sys/fault.h"
#include "sys/log.h"
#include "sys/proc.h"
#include "sys/uapi.h"

namespace ckpt {

struct StubTree::Control {
  std::atomic<int> root_go;  // on_root is done
  std::atomic<int> root_ns;  // the root ran in_root
  std::atomic<int> fork_go;  // before_fork is done (-1: it failed)
  std::atomic<int> phase;
  std::atomic<int> created;
  std::atomic<int> grouped;
  std::atomic<int> joined;
  std::atomic<int> ready;
  std::atomic<int> failed;  // index + 1 of the first stub that failed
  struct Slot {
    std::atomic<int> state;
    char error[512];
  } slots[1];
};

namespace {
void futex_wait(std::atomic<int>* addr, int val) {
  timespec ts{0, 50 * 1000 * 1000};
  syscall(SYS_futex, reinterpret_cast<int*>(addr), FUTEX_WAIT, val, &ts, nullptr, 0);
}
void futex_wake(std::atomic<int>* addr) {
  syscall(SYS_futex, reinterpret_cast<int*>(addr), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

pid_t clone_with_pid(pid_t pid, int exit_signal, uint64_t flags = 0) {
  ckpt_clone_args args{};
  args.flags = flags;
  args.exit_signal = static_cast<uint64_t>(exit_signal);
  args.set_tid = reinterpret_cast<uint64_t>(&pid);
  args.set_tid_size = 1;
  // /proc/PID of a reaped process can vanish a moment before its pid is
  // free again (wait_pids_free watched /proc): EEXIST then means "soon".
  for (int tries = 0;; tries++) {
    pid_t r = static_cast<pid_t>(syscall(SYS_clone3, &args, sizeof args));
    if (r >= 0 || errno != EEXIST || tries >= 2000) return r;
    usleep(1000);
  }
}
}  // namespace

StubTree::StubTree(RestorePlan& plan, const FileTable& files, StubOptions opts)
    : plan_(plan), files_(files), opts_(std::move(opts)) {
  ctl_size_ = sizeof(Control) + (plan.tasks.size() + plan.zombies.size()) * sizeof(Control::Slot);
  void* p = mmap(nullptr, ctl_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw_errno("map restore control block");
  ctl_ = static_cast<Control*>(p);
}

StubTree::~StubTree() {
  if (!released_) kill_all();
  munmap(ctl_, ctl_size_);
}

pid_t StubTree::root_pid() const {
  return root_;
}

void StubTree::stub_main(int idx) {
  const PlannedTask& t = plan_.tasks[idx];
  auto& slot = ctl_->slots[idx];
  auto fail = [&](const char* what, int err) {
    snprintf(slot.error, sizeof slot.error, "%s%s%s", what, err ? ": " : "",
             err ? strerror(err) : "");
    slot.state.store(2);
    int expected = 0;
    ctl_->failed.compare_exchange_strong(expected, idx + 1);
    fail_wake();
    _exit(1);
  };
  // If our parent (a stub, or the controller) dies, so do we: a failed
  // restore leaves nothing behind. The real value comes back at the end.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // Reparented already? (The root's parent is outside its pid namespace,
  // if it has one of its own: getppid() is 0 there.)
  pid_t want_ppid = idx == 0 ? -1 : plan_.tasks[t.parent].pid();
  if (idx == 0 ? getppid() == 1 : getppid() != want_ppid) fail("parent died", 0);
  pid_t pid = t.pid();
  if (idx == 0) {
    while (ctl_->root_go.load() == 0) futex_wait(&ctl_->root_go, 0);
    if (ctl_->root_go.load() < 0) _exit(1);  // the controller failed and says why
  }
  if (idx == 0 && opts_.in_root) {
    try {
      opts_.in_root();
    } catch (const Error& e) {
      fail(e.what(), 0);
    }
  }
  if (idx == 0 && opts_.before_fork) {
    ctl_->root_ns.store(1);
    futex_wake(&ctl_->root_ns);
    while (ctl_->fork_go.load() == 0) futex_wait(&ctl_->fork_go, 0);
    if (ctl_->fork_go.load() < 0) _exit(1);
  }
  // Terminal steps (tty.h): the controlling terminal is taken before the
  // children are forked, who inherit it.
  auto tty_step = [&](auto step) {
    if (!opts_.ttys) return;
    try {
      step(*opts_.ttys);
    } catch (const Error& e) {
      fail(e.what(), 0);
    }
  };
  bool own_session = t.entry.sid() == t.entry.pid();
  tty_step([&](const TtyRestore& tt) { own_session = own_session && !tt.keeps_session(pid); });
  if (own_session && getsid(0) != pid && setsid() < 0) fail("setsid", errno);
  tty_step([&](const TtyRestore& tt) { tt.take_ctty(pid, holder_.get()); });
  for (int c : t.children) {
    const PlannedTask& ct = plan_.tasks[c];
    int sig = ct.core.exit_signal() ? ct.core.exit_signal() : SIGCHLD;
    pid_t r = clone_with_pid(ct.pid(), sig);
    if (r == 0) stub_main(c);
    if (r < 0) {
      char msg[128];
      snprintf(msg, sizeof msg, "create child pid %d (clone3 set_tid)", ct.pid());
      fail(msg, errno);
    }
  }
  for (int z : t.zombies) {
    pid_t r = clone_with_pid(plan_.zombies[z].pid(), SIGCHLD);
    if (r == 0) zombie_main(z);
    if (r < 0) {
      char msg[128];
      snprintf(msg, sizeof msg, "create zombie pid %d (clone3 set_tid)", plan_.zombies[z].pid());
      fail(msg, errno);
    }
  }
  tty_step([&](const TtyRestore& tt) { tt.drop_ctty(pid); });
  arrive(ctl_->created);

  // Groups: leaders make theirs first, then the members join.
  while (ctl_->phase.load() < 1) futex_wait(&ctl_->phase, 0);
  pid_t pgid = static_cast<pid_t>(t.entry.pgid());
  if (pgid == pid && getpgrp() != pid && setpgid(0, 0) < 0) fail("setpgid (leader)", errno);
  arrive(ctl_->grouped);
  while (ctl_->phase.load() < 2) futex_wait(&ctl_->phase, 1);
  if (pgid != pid && getpgrp() != pgid && setpgid(0, pgid) < 0) {
    char msg[128];
    snprintf(msg, sizeof msg, "join process group %d", pgid);
    fail(msg, errno);
  }
  tty_step([&](const TtyRestore& tt) { tt.set_foreground(pid, holder_.get()); });
  if (t.entry.sid() != 0 && getsid(0) != static_cast<pid_t>(t.entry.sid()) &&
      !plan_.inv.shell_job()) {
    char msg[160];
    snprintf(msg, sizeof msg,
             "ended up in session %d instead of %u (session layouts where a "
             "process is in neither its own nor its parent's session are not supported)",
             getsid(0), t.entry.sid());
    fail(msg, 0);
  }
  arrive(ctl_->joined);

  // The holder opens every description meanwhile (in the tree's namespaces).
  while (ctl_->phase.load() < 3) futex_wait(&ctl_->phase, 2);
  umask(t.core.umask());
  if (!t.core.cwd().empty() && chdir(t.core.cwd().c_str()) < 0)
    fail(("chdir " + t.core.cwd()).c_str(), errno);
  try {
    files_.install(t.fds, holder_.get());
  } catch (const Error& e) {
    fail(e.what(), 0);
  }
  if (getenv("CKPT_FAULT") && strcmp(getenv("CKPT_FAULT"), "restore-after-files") == 0 && idx == 0)
    fail("injected fault restore-after-files", 0);
  slot.state.store(1);
  arrive(ctl_->ready);
  // From here the controller takes over with ptrace.
  for (;;) pause();
}

void StubTree::zombie_main(int z) {
  const img::PstreeEntry& e = plan_.zombies[z].entry;
  int slot_idx = static_cast<int>(plan_.tasks.size()) + z;
  auto fail = [&](const char* what, int err) {
    auto& slot = ctl_->slots[slot_idx];
    snprintf(slot.error, sizeof slot.error, "zombie %u: %s%s%s", e.pid(), what, err ? ": " : "",
             err ? strerror(err) : "");
    int expected = 0;
    ctl_->failed.compare_exchange_strong(expected, 1);
    fail_wake();
    _exit(1);
  };
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  pid_t pid = static_cast<pid_t>(e.pid());
  if (e.sid() == e.pid() && setsid() < 0) fail("setsid", errno);
  arrive(ctl_->created);
  while (ctl_->phase.load() < 1) futex_wait(&ctl_->phase, 0);
  pid_t pgid = static_cast<pid_t>(e.pgid());
  if (pgid == pid && getpgrp() != pid && setpgid(0, 0) < 0) fail("setpgid (leader)", errno);
  arrive(ctl_->grouped);
  while (ctl_->phase.load() < 2) futex_wait(&ctl_->phase, 1);
  if (pgid != pid && getpgrp() != pgid && setpgid(0, pgid) < 0) fail("join process group", errno);
  arrive(ctl_->joined);
  arrive(ctl_->ready);
  // Exit the way the process did; its parent reads the same status.
  int st = e.exit_status();
  if (WIFSIGNALED(st)) {
    int sig = WTERMSIG(st);
    signal(sig, SIG_DFL);
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_UNBLOCK, &all, nullptr);
    prctl(PR_SET_DUMPABLE, 0);  // no core file for a status that only says "core dumped"
    kill(getpid(), sig);
  }
  _exit(WEXITSTATUS(st));
}

void StubTree::arrive(std::atomic<int>& c) {
  // Only the last one wakes the controller: each wake-up is a context switch,
  // and a hundred of them per phase showed up in the fork step. (A failure
  // wakes it at once, see fail_wake.)
  int n = static_cast<int>(plan_.tasks.size() + plan_.zombies.size());
  if (c.fetch_add(1) + 1 >= n) futex_wake(&c);
}

void StubTree::fail_wake() {
  futex_wake(&ctl_->failed);
  for (auto* c : {&ctl_->created, &ctl_->grouped, &ctl_->joined, &ctl_->ready}) futex_wake(c);
}

void StubTree::wait_counter(std::atomic<int>& c, int want, int timeout_ms, const char* what) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int f = ctl_->failed.load();
    if (f) {
      for (size_t i = 0; i < plan_.tasks.size() + plan_.zombies.size(); i++)
        if (ctl_->slots[i].error[0])
          throw Error(i < plan_.tasks.size()
                          ? strfmt("pid %d: %s", plan_.tasks[i].pid(), ctl_->slots[i].error)
                          : std::string(ctl_->slots[i].error));
      throw Error(strfmt("restore stub %d failed", f));
    }
    int v = c.load();
    if (v >= want) return;
    int st;
    if (root_ > 0 && waitpid(root_, &st, WNOHANG) == root_) {
      root_ = -1;
      throw Error(strfmt("restore stub of pid %d died while %s", plan_.tasks[0].pid(), what));
    }
    if (std::chrono::steady_clock::now() > deadline)
      throw Error(strfmt("timed out while %s (%d of %d processes)", what, v, want));
    futex_wait(&c, v);
  }
}

void StubTree::raise_phase(int p) {
  ctl_->phase.store(p);
  futex_wake(&ctl_->phase);
}

void StubTree::create(int timeout_ms) {
  const PlannedTask& root = plan_.tasks[0];
  int n = static_cast<int>(plan_.tasks.size() + plan_.zombies.size());
  // Orphaned stubs of a failed restore come to us, not to a PID 1 that
  // reaps late, so their pids are free again at once.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  holder_ = UniqueFd(static_cast<int>(syscall(SYS_pidfd_open, getpid(), 0)));
  if (!holder_) throw_errno("pidfd_open of ckpt itself");
  fflush(nullptr);
  pid_t r = clone_with_pid(root.pid(), SIGCHLD, opts_.root_ns_flags);
  if (r == 0) stub_main(0);
  if (r < 0) throw_errno(strfmt("create root pid %d (clone3 set_tid)", root.pid()));
  root_ = r;
  if (opts_.root_ns_flags & CLONE_NEWPID) plan_.tasks[0].host = r;
  try {
    if (opts_.on_root) opts_.on_root(r);
  } catch (...) {
    ctl_->root_go.store(-1);
    futex_wake(&ctl_->root_go);
    throw;
  }
  ctl_->root_go.store(1);
  futex_wake(&ctl_->root_go);
  if (opts_.before_fork) {
    try {
      wait_counter(ctl_->root_ns, 1, timeout_ms, "setting up the root's namespaces");
      opts_.before_fork(r);
    } catch (...) {
      ctl_->fork_go.store(-1);
      futex_wake(&ctl_->fork_go);
      throw;
    }
    ctl_->fork_go.store(1);
    futex_wake(&ctl_->fork_go);
  }
  wait_counter(ctl_->created, n, timeout_ms, "creating processes");
  raise_phase(1);
  wait_counter(ctl_->grouped, n, timeout_ms, "making process groups");
  raise_phase(2);
  wait_counter(ctl_->joined, n, timeout_ms, "joining process groups");
  if (opts_.root_ns_flags & CLONE_NEWPID) find_host_pids();
}

void StubTree::install_files(int timeout_ms) {
  int n = static_cast<int>(plan_.tasks.size() + plan_.zombies.size());
  raise_phase(3);
  wait_counter(ctl_->ready, n, timeout_ms, "opening files");
}

// In a new pid namespace a stub's pid there is the dumped one; ckpt sees
// another. Walk the tree from the root (whose pid clone3 returned) through
// each stub's children, matching them by their innermost pid.
void StubTree::find_host_pids() {
  auto inner_pid = [](pid_t host) -> pid_t {
    std::string text;
    if (!try_read_file(strfmt("/proc/%d/status", host), &text)) return 0;
    const std::vector<pid_t>& ns = proc::parse_status(text).nspid;
    return ns.empty() ? 0 : ns.back();
  };
  for (auto& t : plan_.tasks) {
    if (!t.host) throw Error(strfmt("pid %d: restore stub not found", t.pid()));
    std::map<pid_t, pid_t> kids;  // inner pid -> host pid
    for (pid_t c : proc::list_children(t.host)) kids[inner_pid(c)] = c;
    for (int c : t.children) {
      auto it = kids.find(plan_.tasks[c].pid());
      if (it == kids.end())
        throw Error(
            strfmt("pid %d: restore stub not found under %d", plan_.tasks[c].pid(), t.pid()));
      plan_.tasks[c].host = it->second;
    }
    for (int z : t.zombies) {
      auto it = kids.find(plan_.zombies[z].pid());
      if (it != kids.end()) plan_.zombies[z].host = it->second;
    }
  }
}

void StubTree::kill_all() {
  // In a pid namespace of its own the tree dies with its init.
  if ((opts_.root_ns_flags & CLONE_NEWPID) && root_ > 0) {
    kill(root_, SIGKILL);
    // The init's exit waits until every task of its namespace is reaped;
    // the ones we trace are ours to reap: reap anything until it is gone.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      pid_t r = waitpid(-1, nullptr, WNOHANG | __WALL);
      if (r == root_) break;
      if (r < 0 && errno == ECHILD) break;
      if (r <= 0) {
        if (std::chrono::steady_clock::now() > deadline) {
          LOG_WARN("restore stubs: pid namespace of %d still dying", root_);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    }
    while (waitpid(-1, nullptr, WNOHANG | __WALL) > 0) {
    }
    root_ = -1;
    return;
  }
  for (const auto& t : plan_.tasks) kill(t.hpid(), SIGKILL);
  for (const auto& z : plan_.zombies) kill(z.hpid(), SIGKILL);
  // Reap what comes to us (root and orphans, we are their subreaper) until
  // no pid of the plan exists any more.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    while (waitpid(-1, nullptr, WNOHANG | __WALL) > 0) {
    }
    bool any = false;
    for (const auto& t : plan_.tasks)
      for (uint32_t tid : t.entry.threads())
        if (access(strfmt("/proc/%u", tid).c_str(), F_OK) == 0) {
          // Only ours: a pid that was never created by us may be someone else's.
          any = true;
        }
    if (!any || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  root_ = -1;
}

}  // namespace ckpt
