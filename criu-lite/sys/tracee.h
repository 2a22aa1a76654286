// Thin wrappers over ptrace(2) for a thread we trace, and an owner that
// detaches (or kills) on destruction.
//
// Call order for a thread of a live tree (dump):
//   Tracee t = Tracee::seize(tid, opts);  // PTRACE_SEIZE
//   t.interrupt(); t.wait_stopped();      // PTRACE_INTERRUPT, event stop
//   ... get_regs / get_xstate / remote syscalls ...
//   t.detach();                           // or the destructor does it
#pragma once

#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/user.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sys/uapi.h"

namespace ckpt {

using Regs = user_regs_struct;

// What a wait on a tracee returned.
struct StopInfo {
  enum Kind { Event, Syscall, Signal, Exited } kind = Event;
  int sig = 0;     // Signal: the signal; Event: WSTOPSIG
  int event = 0;   // Event: PTRACE_EVENT_* (0 for a group-stop report)
  int status = 0;  // raw wait status
};

class Tracee {
 public:
  Tracee() = default;
  // PTRACE_SEIZE; throws naming the tid.
  static Tracee seize(pid_t tid, unsigned options);
  // Takes over a thread the kernel attached for us (PTRACE_O_TRACECLONE).
  static Tracee adopt(pid_t tid);
  Tracee(Tracee&& o) noexcept;
  Tracee& operator=(Tracee&& o) noexcept;
  Tracee(const Tracee&) = delete;
  Tracee& operator=(const Tracee&) = delete;
  ~Tracee();  // detaches if still attached

  pid_t tid() const { return tid_; }
  bool attached() const { return tid_ > 0; }

  void interrupt();
  // Waits for the next stop of this thread; throws if it exited unless
  // allow_exit.
  StopInfo wait(bool allow_exit = false);
  // interrupt() already sent: waits until the thread sits in an event stop,
  // passing any signal that arrives first on to the thread. Returns true if
  // the thread was in a group stop (stopped by SIGSTOP and friends).
  bool wait_stopped();

  Regs get_regs() const;
  void set_regs(const Regs& r) const;
  std::string get_xstate() const;  // NT_X86_XSTATE bytes
  void set_xstate(const std::string& x) const;
  uint64_t get_sigmask() const;
  void set_sigmask(uint64_t m) const;
  // Signals pending on this thread (shared=false) or the process (true), as
  // raw 128-byte siginfo records.
  std::vector<std::string> peek_siginfo(bool shared) const;
  ckpt_rseq_configuration get_rseq() const;

  void cont(int sig = 0) const;  // PTRACE_CONT
  void syscall_step() const;     // PTRACE_SYSCALL
  void single_step() const;      // PTRACE_SINGLESTEP
  void detach(int sig = 0);
  void kill_and_forget();  // SIGKILL, no detach
  pid_t release();         // forget without detaching

 private:
  explicit Tracee(pid_t tid) : tid_(tid) {}
  pid_t tid_ = -1;
};

}  // namespace ckpt
