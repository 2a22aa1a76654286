// Process attributes saved in TaskCore.attrs (proto/task_attrs.proto):
// OOM score adjustment, and the others listed there. Dump and restore side
// by side; the pipelines call these at fixed points.
#pragma once

#include <vector>

#include "core.pb.h"
#include "objects/dump_context.h"
#include "sys/remote.h"
#include "sys/tracee.h"

namespace ckpt {

// Dump: t is stopped, signals blocked, t.remote and t.scratch ready.
void dump_task_attrs(DumpTask& t, img::TaskCore* core);

// Restore, through the leader, after signal handlers, timers, pending
// signals and rlimits, before credentials (some need privileges).
void restore_task_attrs(RemoteThread& leader, const RemoteScratch& scratch, pid_t pid,
                        const img::TaskCore& core);

// Restore, the very last step of a process before its registers are set:
// scratch is already unmapped; for what must come after every other remote
// syscall (a seccomp filter could forbid them). threads are in image order.
void restore_task_attrs_last(std::vector<Tracee>& threads, uint64_t syscall_ip, pid_t pid,
                             const img::TaskCore& core);

}  // namespace ckpt
