// Remote syscalls: make a stopped, traced thread execute one syscall for us.
//
// No code is injected. The thread's registers are set so that it sits on a
// `syscall` instruction (one the kernel's vDSO already contains), with the
// syscall number and arguments in place; PTRACE_SYSCALL runs it to the
// syscall-entry stop and again to the exit stop, where rax holds the result.
//
// Call order:
//   RemoteThread rt(tracee, syscall_ip);   // remembers the thread's registers
//   long r = rt.call(__NR_getpid);         // any number of calls
//   rt.restore();                          // put the remembered registers back
//
// A call stops the thread twice (syscall entry and exit), unless single
// stepping is on: PTRACE_SINGLESTEP over the syscall instruction stops it
// once, with a SIGTRAP after the syscall (ptrace stops are what a call
// costs). That SIGTRAP is forced: as the thread blocks it, the kernel
// unblocks it and resets its handler to the default. Use it only before the
// task's handlers and masks are set.
// The same engine serves the dump (sigactions, itimers, prctl queries), the
// restore (mmap, mremap, prctl, clone3 of threads, ...) and dirty tracking.
//
// Memory arguments go through a RemoteScratch: a small mapping in the task
// that the controller writes and reads with process_vm_writev/readv.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "sys/tracee.h"

namespace ckpt {

class RemoteThread {
 public:
  RemoteThread(Tracee& t, uint64_t syscall_ip);
  // Runs syscall nr; returns the raw result (-errno on failure).
  long call(long nr, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0, uint64_t a4 = 0,
            uint64_t a5 = 0, uint64_t a6 = 0);
  // Same, but a negative result throws Error("what: strerror").
  uint64_t check(const char* what, long nr, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0,
                 uint64_t a4 = 0, uint64_t a5 = 0, uint64_t a6 = 0);
  void set_syscall_ip(uint64_t ip) { ip_ = ip; }
  // One ptrace stop per call instead of two; see above for the price.
  void set_single_step(bool on) { single_step_ = on; }
  uint64_t syscall_ip() const { return ip_; }
  const Regs& saved_regs() const { return saved_; }
  // Sets the registers the thread had when this object was made.
  void restore();
  Tracee& tracee() { return t_; }
  // Thread ids created by clone3 calls in this thread (PTRACE_O_TRACECLONE).
  pid_t last_clone_tid() const { return last_clone_; }

 private:
  Tracee& t_;
  Regs saved_;
  uint64_t ip_;
  pid_t last_clone_ = 0;
  bool single_step_ = false;
};

// A mapping in the target used to pass syscall arguments by address.
class RemoteScratch {
 public:
  RemoteScratch() = default;
  // Maps size bytes (rw) in the task with a remote mmap; at addr if non-zero.
  RemoteScratch(RemoteThread& rt, size_t size, uint64_t addr = 0);
  uint64_t addr() const { return addr_; }
  size_t size() const { return size_; }
  void write(pid_t pid, size_t off, const void* data, size_t len) const;
  void read(pid_t pid, size_t off, void* data, size_t len) const;
  // Unmaps it through rt (the destructor only forgets it: a thread may be
  // gone by then, or the mapping unmapped with everything else).
  void unmap(RemoteThread& rt);

 private:
  uint64_t addr_ = 0;
  size_t size_ = 0;
};

// Copies between our memory and a task's (process_vm_readv/writev, falling
// back to /proc/PID/mem for ranges the task cannot access, like PROT_NONE).
void remote_read(pid_t pid, uint64_t addr, void* data, size_t len);
void remote_write(pid_t pid, uint64_t addr, const void* data, size_t len);

}  // namespace ckpt
