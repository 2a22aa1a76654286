#include "sys/tracee.h"

#include <elf.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include <cstring>
#include <utility>

#include "sys/error.h"
#include "sys/log.h"

#ifndef PTRACE_GETSIGMASK
#define PTRACE_GETSIGMASK 0x420a
#define PTRACE_SETSIGMASK 0x420b
#endif
#ifndef PTRACE_PEEKSIGINFO_SHARED
#define PTRACE_PEEKSIGINFO_SHARED 1
#endif

namespace ckpt {

Tracee Tracee::seize(pid_t tid, unsigned options) {
  if (ptrace(PTRACE_SEIZE, tid, nullptr, reinterpret_cast<void*>(uintptr_t{options})) != 0)
    throw_errno(strfmt("ptrace seize tid %d", tid));
  return Tracee(tid);
}

Tracee Tracee::adopt(pid_t tid) {
  return Tracee(tid);
}

Tracee::Tracee(Tracee&& o) noexcept : tid_(std::exchange(o.tid_, -1)) {}
Tracee& Tracee::operator=(Tracee&& o) noexcept {
  if (this != &o) {
    if (attached()) detach();
    tid_ = std::exchange(o.tid_, -1);
  }
  return *this;
}

Tracee::~Tracee() {
  if (attached()) {
    try {
      detach();
    } catch (...) {
    }
  }
}

void Tracee::interrupt() {
  if (ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) != 0)
    throw_errno(strfmt("ptrace interrupt tid %d", tid_));
}

StopInfo Tracee::wait(bool allow_exit) {
  int status = 0;
  for (;;) {
    pid_t r = waitpid(tid_, &status, __WALL);
    if (r == tid_) break;
    if (r < 0 && errno == EINTR) continue;
    throw_errno(strfmt("wait for tid %d", tid_));
  }
  StopInfo si;
  si.status = status;
  if (WIFEXITED(status) || WIFSIGNALED(status)) {
    si.kind = StopInfo::Exited;
    int t = tid_;
    tid_ = -1;  // nothing left to detach from
    if (!allow_exit) {
      if (WIFSIGNALED(status))
        throw Error(strfmt("tid %d was killed by signal %d", t, WTERMSIG(status)));
      throw Error(strfmt("tid %d exited with status %d", t, WEXITSTATUS(status)));
    }
    return si;
  }
  si.sig = WSTOPSIG(status);
  si.event = status >> 16;
  if (si.sig == (SIGTRAP | 0x80)) {
    si.kind = StopInfo::Syscall;
  } else if (si.event != 0) {
    si.kind = StopInfo::Event;
  } else {
    si.kind = StopInfo::Signal;
  }
  return si;
}

bool Tracee::wait_stopped() {
  for (;;) {
    StopInfo s = wait();
    if (s.kind == StopInfo::Event && s.event == PTRACE_EVENT_STOP) {
      // SIGTRAP means our interrupt; a stop signal means a group stop.
      return s.sig != SIGTRAP;
    }
    if (s.kind == StopInfo::Signal) {
      // A signal was about to be delivered: let it through (the handler runs
      // as it would have), our interrupt is still pending.
      LOG_TRACE("tid %d: passing signal %d before the interrupt stop", tid_, s.sig);
      cont(s.sig);
      continue;
    }
    // Other events (clone/exec/exit reports): resume; the interrupt follows.
    cont(0);
  }
}

Regs Tracee::get_regs() const {
  Regs r;
  iovec iov{&r, sizeof r};
  if (ptrace(PTRACE_GETREGSET, tid_, reinterpret_cast<void*>(NT_PRSTATUS), &iov) != 0)
    throw_errno(strfmt("get registers of tid %d", tid_));
  return r;
}

void Tracee::set_regs(const Regs& r) const {
  Regs copy = r;
  iovec iov{&copy, sizeof copy};
  if (ptrace(PTRACE_SETREGSET, tid_, reinterpret_cast<void*>(NT_PRSTATUS), &iov) != 0)
    throw_errno(strfmt("set registers of tid %d", tid_));
}

std::string Tracee::get_xstate() const {
  // The kernel needs a buffer at least as large as the XSAVE area and then
  // tells the size it used.
  std::string buf(64 * 1024, '\0');
  iovec iov{buf.data(), buf.size()};
  if (ptrace(PTRACE_GETREGSET, tid_, reinterpret_cast<void*>(NT_X86_XSTATE), &iov) != 0)
    throw_errno(strfmt("get XSAVE state of tid %d", tid_));
  buf.resize(iov.iov_len);
  return buf;
}

void Tracee::set_xstate(const std::string& x) const {
  std::string copy = x;
  iovec iov{copy.data(), copy.size()};
  if (ptrace(PTRACE_SETREGSET, tid_, reinterpret_cast<void*>(NT_X86_XSTATE), &iov) != 0)
    throw_errno(strfmt("set XSAVE state of tid %d", tid_));
}

uint64_t Tracee::get_sigmask() const {
  uint64_t m = 0;
  if (ptrace(static_cast<__ptrace_request>(PTRACE_GETSIGMASK), tid_,
             reinterpret_cast<void*>(sizeof m), &m) != 0)
    throw_errno(strfmt("get signal mask of tid %d", tid_));
  return m;
}

void Tracee::set_sigmask(uint64_t m) const {
  if (ptrace(static_cast<__ptrace_request>(PTRACE_SETSIGMASK), tid_,
             reinterpret_cast<void*>(sizeof m), &m) != 0)
    throw_errno(strfmt("set signal mask of tid %d", tid_));
}

std::vector<std::string> Tracee::peek_siginfo(bool shared) const {
  std::vector<std::string> out;
  struct {
    uint64_t off;
    uint32_t flags;
    int32_t nr;
  } arg{};
  arg.flags = shared ? PTRACE_PEEKSIGINFO_SHARED : 0;
  siginfo_t infos[32];
  for (;;) {
    arg.off = out.size();
    arg.nr = 32;
    long n = ptrace(static_cast<__ptrace_request>(PTRACE_PEEKSIGINFO), tid_, &arg, infos);
    if (n < 0) throw_errno(strfmt("peek pending signals of tid %d", tid_));
    for (long i = 0; i < n; i++)
      out.emplace_back(reinterpret_cast<const char*>(&infos[i]), sizeof(siginfo_t));
    if (n < 32) break;
  }
  return out;
}

ckpt_rseq_configuration Tracee::get_rseq() const {
  ckpt_rseq_configuration c{};
  long n = ptrace(static_cast<__ptrace_request>(PTRACE_GET_RSEQ_CONFIGURATION), tid_,
                  reinterpret_cast<void*>(sizeof c), &c);
  if (n < 0) throw_errno(strfmt("get rseq configuration of tid %d", tid_));
  return c;
}

void Tracee::cont(int sig) const {
  if (ptrace(PTRACE_CONT, tid_, nullptr, reinterpret_cast<void*>(intptr_t{sig})) != 0)
    throw_errno(strfmt("ptrace cont tid %d", tid_));
}

void Tracee::syscall_step() const {
  if (ptrace(PTRACE_SYSCALL, tid_, nullptr, nullptr) != 0)
    throw_errno(strfmt("ptrace syscall tid %d", tid_));
}

void Tracee::single_step() const {
  if (ptrace(PTRACE_SINGLESTEP, tid_, nullptr, nullptr) != 0)
    throw_errno(strfmt("ptrace singlestep tid %d", tid_));
}

void Tracee::detach(int sig) {
  pid_t t = std::exchange(tid_, -1);
  if (t > 0 && ptrace(PTRACE_DETACH, t, nullptr, reinterpret_cast<void*>(intptr_t{sig})) != 0 &&
      errno != ESRCH)
    throw_errno(strfmt("ptrace detach tid %d", t));
}

void Tracee::kill_and_forget() {
  pid_t t = std::exchange(tid_, -1);
  if (t > 0) ::kill(t, SIGKILL);
}

pid_t Tracee::release() {
  return std::exchange(tid_, -1);
}

}  // namespace ckpt
