// Freezing a process tree without a cgroup: every thread of every process
// is seized and interrupted (PTRACE_SEIZE + PTRACE_INTERRUPT), parents
// before children, re-listing threads and children until nothing new
// appears, so a task forking or cloning meanwhile is caught too.
#pragma once

#include "objects/dump_context.h"

namespace ckpt {

// Fills ctx.tasks (parents first). Throws naming the task that stops it.
void seize_tree(DumpContext& ctx, pid_t root);

// For every seized task: reads stat/status/smaps, saves and normalizes the
// registers, blocks all signals, prepares remote syscalls and scratch.
// cpu >= 0: the CPU ckpt's thread is pinned to, which every thread of the
// tree is pinned to as well while it is driven (see dump.cc).
void prepare_tasks(DumpContext& ctx, int cpu);

// Finds whether the root is the init of a pid namespace of its own and, if
// so, every task's, thread's and zombie's id inside it (after prepare_tasks).
// A task in a deeper pid namespace than the root's is refused.
void map_namespace_pids(DumpContext& ctx);

// Undo for a tree that must carry on: scratch unmapped, registers, signal
// masks and CPU affinities as they were, threads detached. Never throws.
void thaw_tasks(DumpContext& ctx);
// The end of a dump without --leave-running: SIGKILL every task.
void kill_tasks(DumpContext& ctx);

}  // namespace ckpt
