#include "restore/stubs.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <thread>

#include "restore/early_root.h"
#include "sys/cpu.h"
#include "sys/error.h"
#include "sys/fault.h"
#include "sys/futex.h"
#include "sys/log.h"
#include "sys/ns_enter.h"
#include "sys/proc.h"
#include "sys/uapi.h"

namespace ckpt {

// The freestanding stub's program (generated from criu-lite/stub/stub.c by
// criu-lite/stub/embed.cmake).
extern const unsigned char kStubProgram[];
extern const size_t kStubProgramSize;

namespace {
std::atomic_ref<int32_t> word(int32_t& w) {
  return futex_word(w);
}
}  // namespace

pid_t clone_with_pid(pid_t pid, int exit_signal, uint64_t flags) {
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

UniqueFd freestanding_program(std::string* why) {
  // The root stub executes the program from a memfd: ckpt stays one file.
  // MFD_EXEC: a memfd may be made non-executable by default
  // (vm.memfd_noexec=1), and with vm.memfd_noexec=2 none is executable:
  // copies of ckpt then. A kernel before 6.3 knows neither (EINVAL).
  UniqueFd f(static_cast<int>(syscall(SYS_memfd_create, "ckpt-stub", MFD_CLOEXEC | MFD_EXEC)));
  if (!f && errno == EINVAL)
    f = UniqueFd(static_cast<int>(syscall(SYS_memfd_create, "ckpt-stub", MFD_CLOEXEC)));
  try {
    if (!f) throw_errno("memfd_create");
    write_full(f.get(), kStubProgram, kStubProgramSize, "the freestanding stub's memfd");
  } catch (const Error& e) {
    *why = e.what();
    return UniqueFd();
  }
  return f;
}

// In a forked stub: the control block and the holder's pidfd go across the
// exec at numbers given on its command line (both are close-on-exec here).
void exec_freestanding_stub(int program, int ctl_fd, size_t ctl_size, int holder_fd) {
  int ctl = fcntl(ctl_fd, F_DUPFD, 3);
  int holder = fcntl(holder_fd, F_DUPFD, 3);
  if (ctl < 0 || holder < 0) return;  // the caller fails with errno
  // No allocation: ckpt may have had other threads when it forked us.
  char a1[24], a2[24], a3[24], name[] = "ckpt-stub";
  snprintf(a1, sizeof a1, "%d", ctl);
  snprintf(a2, sizeof a2, "%zu", ctl_size);
  snprintf(a3, sizeof a3, "%d", holder);
  char* argv[] = {name, a1, a2, a3, nullptr};
  char* envp[] = {nullptr};
  syscall(SYS_execveat, program, "", argv, envp, AT_EMPTY_PATH);
}

StubTree::StubTree(RestorePlan& plan, const FileTable& files, StubOptions opts)
    : plan_(plan), files_(files), opts_(std::move(opts)) {
  std::string why = needs_copies();
  if (!why.empty() && opts_.early) {
    LOG_DEBUG("restore stubs: the root made ahead is not used (%s)", why.c_str());
    opts_.early->discard();
    opts_.early = nullptr;
  }
  // An early root is the freestanding stub already, and its children are
  // forks of it.
  if (why.empty() && !opts_.early) program_ = freestanding_program(&why);
  freestanding_ = why.empty();
  if (!freestanding_) {
    program_.reset();
    LOG_DEBUG("restore stubs: copies of ckpt (%s)", why.c_str());
  }
  ckpt_stub_control hdr{};
  ctl_size_ = layout(hdr, freestanding_);
  if (opts_.early)
    ctl_fd_ = opts_.early->take_control_block();  // its stub waits on plan_go there
  else
    ctl_fd_ =
        UniqueFd(static_cast<int>(syscall(SYS_memfd_create, "ckpt-restore-stubs", MFD_CLOEXEC)));
  if (!ctl_fd_) throw_errno("memfd for the restore stubs' control block");
  if (ftruncate(ctl_fd_.get(), static_cast<off_t>(ctl_size_)) != 0)
    throw_errno("size the restore stubs' control block");
  void* p = mmap(nullptr, ctl_size_, PROT_READ | PROT_WRITE, MAP_SHARED, ctl_fd_.get(), 0);
  if (p == MAP_FAILED) throw_errno("map the restore stubs' control block");
  ctl_ = static_cast<ckpt_stub_control*>(p);
  *ctl_ = hdr;
  if (freestanding_) {
    // The destructor does not run for a constructor that throws: the
    // mapping goes here (ckpt receive lives on after a failed restore).
    try {
      write_plan();
    } catch (...) {
      munmap(ctl_, ctl_size_);
      throw;
    }
    LOG_DEBUG("restore stubs: freestanding (%zu processes%s)", plan.tasks.size(),
              ctl_->groups_inherited ? "" : ", process groups joined in phases");
  }
}

StubTree::~StubTree() {
  if (!released_) kill_all();
  munmap(ctl_, ctl_size_);
}

pid_t StubTree::root_pid() const {
  return root_;
}

ckpt_stub_slot& StubTree::slot(size_t i) const {
  return reinterpret_cast<ckpt_stub_slot*>(reinterpret_cast<char*>(ctl_) + ctl_->slots_off)[i];
}

uint64_t StubTree::syscall_ip(size_t idx) const {
  if (!freestanding_)
    return reinterpret_cast<uint64_t>(cpu::vdso_text().data()) + cpu::vdso_syscall_offset();
  uint64_t vdso = std::atomic_ref<uint64_t>(slot(idx).vdso).load();
  if (!vdso)
    throw Error(strfmt("the freestanding restore stub of pid %d did not say where its [vdso] is",
                       plan_.tasks[idx].pid()));
  return vdso + cpu::vdso_syscall_offset();
}

// Would an execve leave ckpt's credentials as they are? The rebuild sets
// credentials only where the saved ones differ from ckpt's (thread.cc), so
// the freestanding stub must have exactly ckpt's. An exec as root sets the
// permitted and effective sets to the bounding set plus the inheritable one
// and drops the ambient set and keep-caps; the saved and fs ids become the
// effective ones (capabilities(7)).
bool exec_keeps_creds() {
  proc::Status me = proc::parse_status(read_file("/proc/thread-self/status"));
  for (int i = 1; i < 4; i++)
    if (me.uid[i] != me.uid[0] || me.gid[i] != me.gid[0]) return false;
  if (me.cap_amb != 0 || prctl(PR_GET_KEEPCAPS) == 1 || prctl(PR_GET_SECUREBITS) != 0) return false;
  uint64_t after = me.uid[0] == 0 ? (me.cap_bnd | me.cap_inh) : 0;
  return me.cap_prm == after && me.cap_eff == after;
}

// Copies of ckpt are needed where a stub must run ckpt's own code. Anything
// the freestanding stub does not know is listed here (see stubs.h).
std::string StubTree::needs_copies() const {
  if (const char* e = getenv("CKPT_STUBS"); e && strcmp(e, "ckpt") == 0) return "CKPT_STUBS=ckpt";
  // Sessions with controlling terminals: taking one, dropping one that is
  // the shell's, giving it to the foreground group (objects/tty.h).
  if (plan_.inv.shell_job()) return "a shell job";
  if (opts_.before_fork || (opts_.ttys && opts_.ttys->has_sessions()))
    return "a session has a controlling terminal";
  // Files a process opens itself or finishes itself (epoll watches, ...).
  std::vector<pid_t> pids;
  for (const auto& t : plan_.tasks) pids.push_back(t.pid());
  for (const auto& t : plan_.tasks)
    if (std::string why = files_.runs_in_stub(t.fds, pids); !why.empty())
      return strfmt("pid %d: %s", t.pid(), why.c_str());
  if (!exec_keeps_creds()) return "an exec would change ckpt's credentials";
  return "";
}

size_t StubTree::layout(ckpt_stub_control& hdr, bool with_plan) {
  auto align = [](size_t v) { return (v + 7) & ~size_t{7}; };
  size_t n_all = plan_.tasks.size() + plan_.zombies.size();
  hdr.n_all = static_cast<int32_t>(n_all);
  size_t off = align(sizeof hdr);
  hdr.slots_off = off;
  off += n_all * sizeof(ckpt_stub_slot);
  if (!with_plan) return off;
  size_t children = 0, fds = 0, strings = 1;  // offset 0 is "no cwd"
  for (const auto& t : plan_.tasks) {
    children += t.children.size() + t.zombies.size();
    fds += static_cast<size_t>(t.fds.fds_size());
    strings += t.core.cwd().size() + 1;
  }
  hdr.magic = CKPT_STUB_MAGIC;
  hdr.n_tasks = static_cast<uint32_t>(plan_.tasks.size());
  hdr.n_zombies = static_cast<uint32_t>(plan_.zombies.size());
  const char* fault = getenv("CKPT_FAULT");
  hdr.fault_after_files = fault && strcmp(fault, "restore-after-files") == 0;
  hdr.tasks_off = off;
  off = align(off + n_all * sizeof(ckpt_stub_task));
  hdr.children_off = off;
  off = align(off + children * sizeof(uint32_t));
  hdr.fds_off = off;
  off = align(off + fds * sizeof(ckpt_stub_fd));
  hdr.strings_off = off;
  off += strings;
  hdr.size = off;
  return off;
}

void StubTree::write_plan() {
  char* base = reinterpret_cast<char*>(ctl_);
  auto* tasks = reinterpret_cast<ckpt_stub_task*>(base + ctl_->tasks_off);
  auto* children = reinterpret_cast<uint32_t*>(base + ctl_->children_off);
  auto* fds = reinterpret_cast<ckpt_stub_fd*>(base + ctl_->fds_off);
  char* strings = base + ctl_->strings_off;
  uint32_t n_children = 0, n_fds = 0, n_strings = 1;
  size_t n_tasks = plan_.tasks.size();
  for (size_t i = 0; i < n_tasks; i++) {
    const PlannedTask& t = plan_.tasks[i];
    ckpt_stub_task& st = tasks[i];
    st.pid = t.pid();
    st.ppid = i == 0 ? -1 : plan_.tasks[t.parent].pid();
    st.sid = static_cast<int32_t>(t.entry.sid());
    st.pgid = static_cast<int32_t>(t.entry.pgid());
    st.exit_signal = t.core.exit_signal() ? static_cast<int32_t>(t.core.exit_signal()) : SIGCHLD;
    st.umask = t.core.umask();
    st.holder_fd = FileTable::holder_fd_number(t.fds);
    for (const auto& v : t.mm.vmas()) {
      int k = v.kind() == img::VMA_VVAR          ? CKPT_STUB_VVAR
              : v.kind() == img::VMA_VVAR_VCLOCK ? CKPT_STUB_VVAR_VCLOCK
              : v.kind() == img::VMA_VDSO        ? CKPT_STUB_VDSO
                                                 : -1;
      if (k < 0) continue;
      st.special[k][0] = v.start();
      st.special[k][1] = v.end();
    }
    if (!t.core.cwd().empty()) {
      st.cwd = n_strings;
      memcpy(strings + n_strings, t.core.cwd().c_str(), t.core.cwd().size() + 1);
      n_strings += static_cast<uint32_t>(t.core.cwd().size() + 1);
    }
    st.children = n_children;
    for (int c : t.children) children[n_children++] = static_cast<uint32_t>(c);
    for (int z : t.zombies) {
      children[n_children++] = static_cast<uint32_t>(n_tasks + z);
      tasks[n_tasks + z].ppid = t.pid();
    }
    st.n_children = n_children - st.children;
    // Ascending numbers (FileTable::install says why); a description met
    // again is dup'ed from its first fd.
    std::vector<const img::FdEntry*> order;
    for (const auto& e : t.fds.fds()) order.push_back(&e);
    std::sort(order.begin(), order.end(),
              [](const img::FdEntry* a, const img::FdEntry* b) { return a->fd() < b->fd(); });
    std::map<uint32_t, int32_t> first;
    st.fds = n_fds;
    for (const img::FdEntry* e : order) {
      ckpt_stub_fd& f = fds[n_fds];
      f.fd = static_cast<int32_t>(e->fd());
      f.holder = -1;
      f.desc = e->desc_id();
      f.cloexec = e->cloexec();
      auto [it, fresh] = first.emplace(e->desc_id(), static_cast<int32_t>(n_fds - st.fds));
      f.same_as = fresh ? -1 : it->second;
      n_fds++;
    }
    st.n_fds = n_fds - st.fds;
  }
  for (size_t z = 0; z < plan_.zombies.size(); z++) {
    const img::PstreeEntry& e = plan_.zombies[z].entry;
    ckpt_stub_task& st = tasks[n_tasks + z];
    st.pid = static_cast<int32_t>(e.pid());
    st.sid = static_cast<int32_t>(e.sid());
    st.pgid = static_cast<int32_t>(e.pgid());
    st.exit_signal = SIGCHLD;
    st.zombie = 1;
    st.exit_status = static_cast<int32_t>(e.exit_status());
  }
  // Can the group phases go? They can if every process, once it made its
  // session or (early) its group, is in its group: a session leader leads
  // its group, a group leader makes it before forking (so its children are
  // born in it), everyone else stays in the group it was born in, its
  // parent's. The usual tree (one session and group, or a group per child)
  // is like that; a process that must join a group made elsewhere is not.
  bool inherited = true;
  auto group_of = [&](const ckpt_stub_task& t, int32_t born_in) {
    return t.sid == t.pid || t.pgid == t.pid ? t.pid : born_in;
  };
  std::vector<int32_t> group(ctl_->n_all, 0);
  std::vector<uint32_t> todo{0};
  group[0] = group_of(tasks[0], -1);
  while (!todo.empty()) {
    uint32_t i = todo.back();
    todo.pop_back();
    if (group[i] != tasks[i].pgid) inherited = false;
    for (uint32_t k = 0; k < tasks[i].n_children; k++) {
      uint32_t c = children[tasks[i].children + k];
      group[c] = group_of(tasks[c], group[i]);
      todo.push_back(c);
    }
  }
  ctl_->groups_inherited = inherited;
}

// In the root stub, in the tree's namespaces: becomes the freestanding stub,
// which forks the rest.
void StubTree::exec_freestanding() {
  exec_freestanding_stub(program_.get(), ctl_fd_.get(), ctl_size_, holder_.get());
}

// The exec'd root must have kept ckpt's credentials (exec_keeps_creds
// predicted it): the rebuild compares the saved ones with ckpt's.
void check_stub_creds(pid_t stub) {
  proc::Status me = proc::parse_status(read_file("/proc/thread-self/status"));
  std::string text;
  if (!try_read_file(strfmt("/proc/%d/status", stub), &text))
    throw Error("the freestanding restore stub is gone");
  proc::Status st = proc::parse_status(text);
  if (!std::equal(me.uid, me.uid + 4, st.uid) || !std::equal(me.gid, me.gid + 4, st.gid) ||
      me.groups != st.groups || me.cap_inh != st.cap_inh || me.cap_prm != st.cap_prm ||
      me.cap_eff != st.cap_eff || me.cap_bnd != st.cap_bnd || me.cap_amb != st.cap_amb)
    throw Error(strfmt(
        "the freestanding restore stub has other credentials than ckpt after its exec "
        "(CapPrm %llx, ckpt's %llx): restore with CKPT_STUBS=ckpt",
        static_cast<unsigned long long>(st.cap_prm), static_cast<unsigned long long>(me.cap_prm)));
}

void StubTree::stub_main(int idx) {
  const PlannedTask& t = plan_.tasks[idx];
  ckpt_stub_slot& my = slot(static_cast<size_t>(idx));
  auto fail = [&](const char* what, int err) {
    snprintf(my.error, sizeof my.error, "%s", what);
    my.err = err;
    word(my.state).store(2);
    int expected = 0;
    word(ctl_->failed).compare_exchange_strong(expected, idx + 1);
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
    while (word(ctl_->root_go).load() == 0) futex_wait(&ctl_->root_go, 0);
    if (word(ctl_->root_go).load() < 0) _exit(1);  // the controller failed and says why
  }
  if (idx == 0 && opts_.in_root) {
    try {
      opts_.in_root();
    } catch (const Error& e) {
      fail(e.what(), 0);
    }
  }
  if (idx == 0 && opts_.before_fork) {
    word(ctl_->root_ns).store(1);
    futex_wake(&ctl_->root_ns);
    while (word(ctl_->fork_go).load() == 0) futex_wait(&ctl_->fork_go, 0);
    if (word(ctl_->fork_go).load() < 0) _exit(1);
  }
  if (freestanding_) {
    exec_freestanding();
    fail(
        "execute the freestanding restore stub (execveat; CKPT_STUBS=ckpt restores with "
        "copies of ckpt instead)",
        errno);
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
  while (word(ctl_->phase).load() < 1) futex_wait(&ctl_->phase, 0);
  pid_t pgid = static_cast<pid_t>(t.entry.pgid());
  if (pgid == pid && getpgrp() != pid && setpgid(0, 0) < 0) fail("setpgid (leader)", errno);
  arrive(ctl_->grouped);
  while (word(ctl_->phase).load() < 2) futex_wait(&ctl_->phase, 1);
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
  while (word(ctl_->phase).load() < 3) futex_wait(&ctl_->phase, 2);
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
  word(my.state).store(1);
  arrive(ctl_->ready);
  // From here the controller takes over with ptrace.
  for (;;) pause();
}

void StubTree::zombie_main(int z) {
  const img::PstreeEntry& e = plan_.zombies[z].entry;
  int slot_idx = static_cast<int>(plan_.tasks.size()) + z;
  auto fail = [&](const char* what, int err) {
    ckpt_stub_slot& my = slot(static_cast<size_t>(slot_idx));
    snprintf(my.error, sizeof my.error, "zombie %u: %s", e.pid(), what);
    my.err = err;
    int expected = 0;
    word(ctl_->failed).compare_exchange_strong(expected, slot_idx + 1);
    fail_wake();
    _exit(1);
  };
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  pid_t pid = static_cast<pid_t>(e.pid());
  if (e.sid() == e.pid() && setsid() < 0) fail("setsid", errno);
  arrive(ctl_->created);
  while (word(ctl_->phase).load() < 1) futex_wait(&ctl_->phase, 0);
  pid_t pgid = static_cast<pid_t>(e.pgid());
  if (pgid == pid && getpgrp() != pid && setpgid(0, 0) < 0) fail("setpgid (leader)", errno);
  arrive(ctl_->grouped);
  while (word(ctl_->phase).load() < 2) futex_wait(&ctl_->phase, 1);
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

void StubTree::arrive(int32_t& c) {
  // Only the last one wakes the controller: each wake-up is a context switch,
  // and a hundred of them per phase showed up in the fork step. (A failure
  // wakes it at once, see fail_wake.)
  if (word(c).fetch_add(1) + 1 >= ctl_->n_all) futex_wake(&c);
}

void StubTree::fail_wake() {
  futex_wake(&ctl_->failed);
  for (auto* c : {&ctl_->created, &ctl_->grouped, &ctl_->joined, &ctl_->ready}) futex_wake(c);
}

void StubTree::wait_counter(int32_t& c, int want, int timeout_ms, const char* what) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int f = word(ctl_->failed).load();
    if (f) {
      for (size_t i = 0; i < plan_.tasks.size() + plan_.zombies.size(); i++) {
        const ckpt_stub_slot& sl = slot(i);
        if (!sl.error[0]) continue;
        std::string msg(sl.error, strnlen(sl.error, sizeof sl.error));
        if (sl.err) msg += std::string(": ") + strerror(sl.err);
        if (i >= plan_.tasks.size() && freestanding_)
          msg = strfmt("zombie %u: %s", plan_.zombies[i - plan_.tasks.size()].pid(), msg.c_str());
        throw Error(i < plan_.tasks.size() ? strfmt("pid %d: %s", plan_.tasks[i].pid(), msg.c_str())
                                           : msg);
      }
      throw Error(strfmt("restore stub %d failed", f));
    }
    int v = word(c).load();
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
  word(ctl_->phase).store(p);
  futex_wake(&ctl_->phase);
}

void StubTree::fork_root() {
  const PlannedTask& root = plan_.tasks[0];
  fflush(nullptr);
  // The root is cloned from this thread in the namespace it must join: a
  // thread's network namespace is its own, and a child starts in it.
  std::optional<NsEnter> in_netns;
  if (opts_.netns_fd >= 0) in_netns.emplace(opts_.netns_fd);
  pid_t r = clone_with_pid(root.pid(), SIGCHLD, opts_.root_ns_flags);
  if (r == 0) stub_main(0);
  in_netns.reset();
  if (r < 0) throw_errno(strfmt("create root pid %d (clone3 set_tid)", root.pid()));
  root_ = r;
  root_exists(ctl_->root_go);
}

void StubTree::root_exists(int32_t& go) {
  if (opts_.root_ns_flags & CLONE_NEWPID) plan_.tasks[0].host = root_;
  // The root waits on go: 1 once on_root is done, -1 if it failed.
  try {
    if (opts_.on_root) opts_.on_root(root_);
  } catch (...) {
    word(go).store(-1);
    futex_wake(&go);
    throw;
  }
  word(go).store(1);
  futex_wake(&go);
  if (opts_.beside_root) opts_.beside_root(root_);
}

void StubTree::create(int timeout_ms) {
  int n = static_cast<int>(plan_.tasks.size() + plan_.zombies.size());
  // Orphaned stubs of a failed restore come to us, not to a PID 1 that
  // reaps late, so their pids are free again at once.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  if (opts_.early) {
    // Made ahead, parked in the freestanding stub until its plan is here.
    root_ = opts_.early->take();
    root_exists(ctl_->plan_go);
  } else {
    // The early root had its own (EarlyRoot), passed across its exec.
    holder_ = UniqueFd(static_cast<int>(syscall(SYS_pidfd_open, getpid(), 0)));
    if (!holder_) throw_errno("pidfd_open of ckpt itself");
    fork_root();
  }
  if (opts_.before_fork) {
    try {
      wait_counter(ctl_->root_ns, 1, timeout_ms, "setting up the root's namespaces");
      opts_.before_fork(root_);
    } catch (...) {
      word(ctl_->fork_go).store(-1);
      futex_wake(&ctl_->fork_go);
      throw;
    }
    word(ctl_->fork_go).store(1);
    futex_wake(&ctl_->fork_go);
  }
  wait_counter(ctl_->created, n, timeout_ms, "creating processes");
  if (int r = word(ctl_->clone_retries).load())
    LOG_DEBUG("restore stubs: %d clone3 calls met a pid not yet free", r);
  if (freestanding_ && !opts_.early) check_stub_creds(root_);
  if (!ctl_->groups_inherited) {
    raise_phase(1);
    wait_counter(ctl_->grouped, n, timeout_ms, "making process groups");
    raise_phase(2);
    wait_counter(ctl_->joined, n, timeout_ms, "joining process groups");
  }
  if (opts_.root_ns_flags & CLONE_NEWPID) find_host_pids();
}

void StubTree::install_files(int timeout_ms) {
  int n = static_cast<int>(plan_.tasks.size() + plan_.zombies.size());
  if (freestanding_) {
    // The holder's numbers of the descriptions, now that they are open.
    auto* fds = reinterpret_cast<ckpt_stub_fd*>(reinterpret_cast<char*>(ctl_) + ctl_->fds_off);
    size_t total = 0;
    for (const auto& t : plan_.tasks) total += static_cast<size_t>(t.fds.fds_size());
    for (size_t i = 0; i < total; i++) fds[i].holder = files_.holder_fd(fds[i].desc);
  }
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
  // Once: a second call (the destructor after a KillFirst) would look for
  // the tree's pids in ckpt's pid namespace, where a recreated namespace's
  // pids (1, 2, ...) belong to others, and wait for them to go.
  if (killed_) return;
  killed_ = true;
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
