// A thread's own state: registers, XSAVE area, signal mask, pending
// signals, TLS base (in the registers), rseq, robust list, clear_child_tid,
// sigaltstack, name and credentials (credentials are per thread in Linux).
#pragma once

#include "core.pb.h"
#include "objects/dump_context.h"

namespace ckpt {

// A task stopped inside a syscall shows rip after the syscall instruction
// and rax holding a restart code. Rewrites such registers so that resuming
// them re-runs the syscall (or returns EINTR where the kernel would have
// used a restart block that does not survive a restore); sets orig_rax -1.
Regs normalize_regs(const Regs& r);

// Fills out from thread idx of t (stopped, signals blocked, t.remote ready).
void dump_thread(DumpTask& t, size_t idx, img::ThreadCore* out);

// Restore side, through remote syscalls in the thread itself (scratch is
// mapped in its address space): tid address, robust list, sigaltstack, rseq,
// name. Credentials are separate because they must come last.
void restore_thread_state(RemoteThread& rt, const RemoteScratch& scratch, pid_t pid,
                          const img::ThreadCore& tc);
void restore_thread_creds(RemoteThread& rt, const RemoteScratch& scratch, pid_t pid,
                          const img::Creds& c);
// Final registers and XSAVE state, set while the thread is stopped.
void restore_thread_regs(Tracee& t, const img::ThreadCore& tc);

img::X86Regs regs_to_image(const Regs& r);
Regs regs_from_image(const img::X86Regs& r);

}  // namespace ckpt
