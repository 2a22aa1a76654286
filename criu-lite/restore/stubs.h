// Restore stubs: the processes that become the restored tree.
//
// The controller forks the root with clone3(set_tid) and each stub forks its
// own children the same way, so every process gets its old pid and parent.
// Stubs run ordinary code for what ordinary code can do from the inside:
// sessions, process groups, the fd table, umask, cwd. Then they park in
// pause(); the controller seizes them and rebuilds each address space
// through remote syscalls (restore.cc).
//
// Two kinds of stub, chosen per restore:
//   freestanding  the root stub, once in the tree's namespaces (in_root),
//                 executes a program of a few pages without libc
//                 (criu-lite/stub/stub.c, embedded in ckpt, run from a
//                 memfd) that forks the rest of the tree from a plan in
//                 shared memory. Every stub is then a copy of that small
//                 process: cheap to fork and to rebuild (docs/performance.md).
//   copies of ckpt  the C++ code below runs in every stub. Needed when a
//                 stub must run ckpt's code: controlling terminals, files
//                 the process opens itself or finishes itself (fd_kind.h:
//                 FdKind::runs_in_stub), or credentials an exec would change.
//
// Stubs and controller meet in a shared memfd (restore/stub_plan.h): phase
// numbers the controller raises, counters the stubs bump, one slot per task
// where a stub that fails writes why, and the freestanding stub's plan.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "objects/files.h"
#include "objects/tty.h"
#include "restore/plan.h"
#include "restore/stub_plan.h"
#include "sys/fd.h"

namespace ckpt {

class EarlyRoot;

struct StubOptions {
  // CLONE_NEW* flags for the root: the namespaces the tree gets of its own.
  // With CLONE_NEWPID the root is pid 1 of the new namespace.
  uint64_t root_ns_flags = 0;
  // A network namespace the root joins (without CLONE_NEWNET in
  // root_ns_flags): one made ahead (PreparedNetns). -1: none.
  int netns_fd = -1;
  // Runs in ckpt once the root exists (host_pid: ckpt's pid of it), before
  // it forks the rest: configure its new namespaces, move it into its
  // cgroup. Throws to fail.
  std::function<void(pid_t host_pid)> on_root;
  // Runs in ckpt right after on_root, while the root runs in_root and forks
  // the rest: what fills the new namespaces from outside (links, addresses,
  // host name, IPC objects), which the stubs need only once their files are
  // opened. Throws to fail (the stubs are killed).
  std::function<void(pid_t host_pid)> beside_root;
  // Runs in the root stub, in its new namespaces, before it forks the rest
  // of the tree (the mounts of a new mount namespace). Throws to fail.
  std::function<void()> in_root;
  // Runs in ckpt once the root stub ran in_root (the tree's namespaces are
  // complete), before the root makes its session and forks the rest: opens
  // what session leaders take from the holder before their children exist
  // (controlling terminals, which children can only inherit). Throws to fail.
  std::function<void(pid_t host_pid)> before_fork;
  // Controlling terminals and foreground groups (objects/tty.h); optional.
  const TtyRestore* ttys = nullptr;
  // A root made ahead (early_root.h) that agrees with the plan: it replaces
  // the fork of the root, on_root's attach and in_root (done ahead). The
  // tree takes it if its stubs can be freestanding, or discards it.
  EarlyRoot* early = nullptr;
};

class StubTree {
 public:
  StubTree(RestorePlan& plan, const FileTable& files, StubOptions opts = {});
  StubTree(const StubTree&) = delete;
  ~StubTree();  // kills and reaps every stub unless released

  // Forks the whole tree (sessions and process groups made) and waits until
  // every stub waits for its files; fills each task's host pid when the tree
  // has a pid namespace of its own. Throws with the failing stub's reason.
  void create(int timeout_ms);
  // After the holder (this process) opened every description: each stub
  // takes its own, then parks.
  void install_files(int timeout_ms);
  // ckpt's pid of the root (its pid in the tree's namespace is plan's).
  pid_t root_pid() const;
  // The stubs are the freestanding program, not copies of ckpt.
  bool freestanding() const { return freestanding_; }
  // The root is the one made ahead (StubOptions::early).
  bool early_root() const { return opts_.early != nullptr; }
  // After install_files(): the address of a syscall instruction in the
  // [vdso] of the stub of plan task idx, where remote syscalls enter the
  // kernel (sys/remote.h). Copies of ckpt have ckpt's [vdso]; a
  // freestanding stub has the one its execve placed, or the dumped one if
  // it could move it there (then the rebuild finds it in place).
  uint64_t syscall_ip(size_t idx) const;
  // The tree now belongs to the restored program.
  void release() { released_ = true; }
  // Kills every stub (used on failure) and waits for the pids to be free.
  void kill_all();

 private:
  void fork_root();
  // The root is root_: on_root, let it go on (go: the word it waits on),
  // beside_root.
  void root_exists(int32_t& go);
  [[noreturn]] void stub_main(int idx);
  void exec_freestanding();  // returns only if it failed (errno)
  [[noreturn]] void zombie_main(int z);
  void wait_counter(int32_t& c, int want, int timeout_ms, const char* what);
  void arrive(int32_t& c);  // a stub is done with a phase
  void fail_wake();
  void raise_phase(int p);

  void find_host_pids();
  // Why this tree needs copies of ckpt as stubs ("" if it does not).
  std::string needs_copies() const;
  // Sizes the control block, and for freestanding stubs writes the plan.
  size_t layout(ckpt_stub_control& hdr, bool with_plan);
  void write_plan();
  ckpt_stub_slot& slot(size_t i) const;

  RestorePlan& plan_;
  const FileTable& files_;
  StubOptions opts_;
  UniqueFd holder_;  // pidfd of this process, inherited by the stubs
  UniqueFd ctl_fd_;  // memfd of the control block (stub_plan.h)
  ckpt_stub_control* ctl_ = nullptr;
  size_t ctl_size_ = 0;
  bool freestanding_ = false;
  UniqueFd program_;  // memfd holding the freestanding stub's program
  pid_t root_ = -1;
  bool released_ = false;
  bool killed_ = false;
};

// Shared with the early root (early_root.h).
// clone3 with pid as the child's pid (in its innermost pid namespace), retried
// while the pid is a moment from free (EEXIST). Returns like clone3.
pid_t clone_with_pid(pid_t pid, int exit_signal, uint64_t flags = 0);
// The freestanding stub's program in a memfd; an empty fd and why if this
// machine cannot have one.
UniqueFd freestanding_program(std::string* why);
// In a forked root stub: executes program with the control block and the
// holder's pidfd. Returns only if the exec failed (errno).
void exec_freestanding_stub(int program, int ctl_fd, size_t ctl_size, int holder_fd);
// Whether an execve would leave ckpt's credentials as they are.
bool exec_keeps_creds();
// Throws unless the exec'd stub has exactly ckpt's credentials (the rebuild
// sets only those that differ from ckpt's).
void check_stub_creds(pid_t stub);

}  // namespace ckpt
