#include "sys/remote.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>

#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"

namespace ckpt {

RemoteThread::RemoteThread(Tracee& t, uint64_t syscall_ip)
    : t_(t), saved_(t.get_regs()), ip_(syscall_ip) {}

long RemoteThread::call(long nr, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5,
                        uint64_t a6) {
  Regs r = saved_;
  r.rax = static_cast<uint64_t>(nr);
  r.rdi = a1;
  r.rsi = a2;
  r.rdx = a3;
  r.r10 = a4;
  r.r8 = a5;
  r.r9 = a6;
  r.rip = ip_;
  // orig_rax = -1: the kernel must not treat the stop we resume from as an
  // interrupted syscall to restart.
  r.orig_rax = static_cast<uint64_t>(-1);
  r.eflags &= ~0x100ULL;  // no single-step trap
  t_.set_regs(r);
  bool entered = false;
  for (;;) {
    if (single_step_)
      t_.single_step();
    else
      t_.syscall_step();
    StopInfo s = t_.wait();
    if (s.kind == StopInfo::Syscall) {
      if (!entered) {
        entered = true;
        continue;
      }
      break;
    }
    if (s.kind == StopInfo::Event) {
      if (s.event == PTRACE_EVENT_CLONE) {
        unsigned long msg = 0;
        ptrace(PTRACE_GETEVENTMSG, t_.tid(), nullptr, &msg);
        last_clone_ = static_cast<pid_t>(msg);
      }
      continue;
    }
    if (s.kind == StopInfo::Signal) {
      if (single_step_ && s.sig == SIGTRAP) {
        Regs after = t_.get_regs();
        if (after.rip == ip_ + 2) {  // past the 2-byte syscall instruction: done
          LOG_TRACE("tid %d: syscall %ld(%#lx, %#lx, %#lx) = %lld", t_.tid(), nr, (unsigned long)a1,
                    (unsigned long)a2, (unsigned long)a3, static_cast<long long>(after.rax));
          return static_cast<long>(after.rax);
        }
      }
      // Signals are blocked while we drive the thread; what still arrives
      // (a synchronous fault) means the call went wrong.
      if (s.sig == SIGSEGV || s.sig == SIGBUS || s.sig == SIGILL || s.sig == SIGTRAP)
        throw Error(strfmt("tid %d: remote syscall %ld faulted with signal %d at %#llx", t_.tid(),
                           nr, s.sig, static_cast<unsigned long long>(t_.get_regs().rip)));
      LOG_DEBUG("tid %d: signal %d held back during remote syscall %ld", t_.tid(), s.sig, nr);
      continue;
    }
  }
  Regs after = t_.get_regs();
  LOG_TRACE("tid %d: syscall %ld(%#lx, %#lx, %#lx) = %lld", t_.tid(), nr, (unsigned long)a1,
            (unsigned long)a2, (unsigned long)a3, static_cast<long long>(after.rax));
  return static_cast<long>(after.rax);
}

uint64_t RemoteThread::check(const char* what, long nr, uint64_t a1, uint64_t a2, uint64_t a3,
                             uint64_t a4, uint64_t a5, uint64_t a6) {
  long r = call(nr, a1, a2, a3, a4, a5, a6);
  if (r < 0 && r > -4096) throw Error(std::string(what), static_cast<int>(-r));
  return static_cast<uint64_t>(r);
}

void RemoteThread::restore() {
  t_.set_regs(saved_);
}

RemoteScratch::RemoteScratch(RemoteThread& rt, size_t size, uint64_t addr) : size_(size) {
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | (addr ? MAP_FIXED_NOREPLACE : 0);
  addr_ = rt.check("map scratch memory", __NR_mmap, addr, size, PROT_READ | PROT_WRITE, flags,
                   static_cast<uint64_t>(-1), 0);
}

void RemoteScratch::write(pid_t pid, size_t off, const void* data, size_t len) const {
  if (off + len > size_) throw Error("remote scratch overflow");
  remote_write(pid, addr_ + off, data, len);
}

void RemoteScratch::read(pid_t pid, size_t off, void* data, size_t len) const {
  if (off + len > size_) throw Error("remote scratch overflow");
  remote_read(pid, addr_ + off, data, len);
}

void RemoteScratch::unmap(RemoteThread& rt) {
  if (addr_) rt.check("unmap scratch memory", __NR_munmap, addr_, size_);
  addr_ = 0;
}

namespace {
void mem_file_io(pid_t pid, uint64_t addr, void* data, size_t len, bool write) {
  UniqueFd fd = open_or_throw(strfmt("/proc/%d/mem", pid), write ? O_WRONLY : O_RDONLY);
  auto* p = static_cast<char*>(data);
  while (len > 0) {
    ssize_t n = write ? ::pwrite(fd.get(), p, len, static_cast<off_t>(addr))
                      : ::pread(fd.get(), p, len, static_cast<off_t>(addr));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      throw_errno(n < 0 ? errno : EIO,
                  strfmt("%s memory of pid %d at %#llx", write ? "write" : "read", pid,
                         static_cast<unsigned long long>(addr)));
    p += n;
    addr += static_cast<uint64_t>(n);
    len -= static_cast<size_t>(n);
  }
}
}  // namespace

void remote_read(pid_t pid, uint64_t addr, void* data, size_t len) {
  iovec local{data, len};
  iovec remote{reinterpret_cast<void*>(addr), len};
  ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
  if (n == static_cast<ssize_t>(len)) return;
  mem_file_io(pid, addr, data, len, false);
}

void remote_write(pid_t pid, uint64_t addr, const void* data, size_t len) {
  iovec local{const_cast<void*>(data), len};
  iovec remote{reinterpret_cast<void*>(addr), len};
  ssize_t n = process_vm_writev(pid, &local, 1, &remote, 1, 0);
  if (n == static_cast<ssize_t>(len)) return;
  mem_file_io(pid, addr, const_cast<void*>(data), len, true);
}

}  // namespace ckpt
