// Process attributes saved in TaskCore.attrs (proto/task_attrs.proto): OOM
// score adjustment, child subreaper, per-thread scheduling (policy,
// priority, nice, affinity, timer slack), POSIX timers and seccomp. Dump and
// restore side by side; the pipelines call these at fixed points.
#pragma once

#include <vector>

#include "core.pb.h"
#include "objects/dump_context.h"
#include "sys/remote.h"
#include "sys/tracee.h"

namespace ckpt {

// Dump: t is stopped, signals blocked, t.remote and t.scratch ready. Every
// thread must already run with PTRACE_O_SUSPEND_SECCOMP if it has seccomp
// (dump/seize.cc), or its filter would judge our remote syscalls.
void dump_task_attrs(DumpTask& t, img::TaskCore* core);

// Restore, through the leader, after the threads exist, signal handlers,
// timers, pending signals and rlimits, before credentials (some need
// privileges). threads are in image order, threads[0] is the leader's.
void restore_task_attrs(RemoteThread& leader, std::vector<Tracee>& threads,
                        const RemoteScratch& scratch, pid_t pid, const img::TaskCore& core);

// Restore, the very last step of a process before its registers are set:
// scratch is already unmapped; for what must come after every other remote
// syscall (a seccomp filter could forbid them). threads are in image order.
void restore_task_attrs_last(std::vector<Tracee>& threads, uint64_t syscall_ip, pid_t pid,
                             const img::TaskCore& core);

// Parts, in their own files.
// posix_timers.cc: /proc/PID/timers + remote timer_gettime; restore with the
// same ids (PR_TIMER_CREATE_RESTORE_IDS, Linux 6.15).
void dump_posix_timers(DumpTask& t, img::TaskAttrs* a);
void restore_posix_timers(RemoteThread& leader, const RemoteScratch& scratch, pid_t pid,
                          const img::TaskAttrs& a);
// seccomp.cc: filters with PTRACE_SECCOMP_GET_FILTER per thread; restored
// oldest first, strict mode last.
void dump_seccomp(DumpTask& t, img::TaskAttrs* a);
void restore_seccomp(std::vector<Tracee>& threads, uint64_t syscall_ip, pid_t pid,
                     const img::TaskAttrs& a);

}  // namespace ckpt
