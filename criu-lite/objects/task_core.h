// Process-wide state that is neither memory nor files: name, personality,
// umask, rlimits, signal handlers, interval timers, process-wide pending
// signals, cwd and root, parent-death signal, dumpable flag; the threads'
// own state comes from thread.h. Saved as core-PID.img.
#pragma once

#include "core.pb.h"
#include "objects/dump_context.h"

namespace ckpt {

void dump_task_core(DumpContext& ctx, DumpTask& t);
inline std::string core_name(pid_t pid) {
  return "core-" + std::to_string(pid) + ".img";
}

// Restore side (remote syscalls in the task's leader; scratch in the task).
// The handlers a restore stub starts with: ckpt's own (a copy of ckpt), or
// what an execve left of them (caught ones back to the default, flags and
// masks cleared: the freestanding stub, restore/stubs.h).
enum class StubHandlers { ckpts, after_exec };
void restore_sigactions(RemoteThread& rt, const RemoteScratch& s, pid_t pid,
                        const img::TaskCore& core, StubHandlers inherited = StubHandlers::ckpts);
void restore_itimers(RemoteThread& rt, const RemoteScratch& s, pid_t pid,
                     const img::TaskCore& core);
// Queues the saved pending signals again: process-wide ones through the
// leader, per-thread ones through each thread (tid_rts in thread order).
// pid is ckpt's view of the process (for the scratch); vpid and vtid are the
// task's own view, which is what the queueing syscalls it runs take.
void restore_pending(RemoteThread& rt, const RemoteScratch& s, pid_t pid, pid_t vpid, pid_t vtid,
                     const std::vector<img::SigInfo>& sigs, bool shared);
void restore_rlimits(pid_t pid, const img::TaskCore& core);
void restore_task_misc(RemoteThread& rt, const img::TaskCore& core);

}  // namespace ckpt
