#include "dump/seize.h"

#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <set>
#include <thread>
#include <vector>

#include "objects/thread.h"
#include "objects/vma_flags.h"
#include "sys/affinity.h"
#include "sys/cancel.h"
#include "sys/cpu.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"

namespace ckpt {

namespace {

constexpr unsigned kSeizeOptions = PTRACE_O_TRACESYSGOOD;

void seize_threads(DumpTask& t) {
  std::set<pid_t> seen;
  for (;;) {
    std::vector<pid_t> tids = proc::list_threads(t.pid);
    if (tids.empty()) throw Error("the process exited");
    bool added = false;
    for (pid_t tid : tids) {
      if (seen.count(tid)) continue;
      seen.insert(tid);
      Tracee tr;
      try {
        tr = Tracee::seize(tid, kSeizeOptions);
      } catch (const Error& e) {
        // A thread that exited between listing and seizing is fine.
        if (e.err() == ESRCH && access(strfmt("/proc/%d/task/%d", t.pid, tid).c_str(), F_OK) != 0)
          continue;
        throw;
      }
      tr.interrupt();
      bool stopped = tr.wait_stopped();
      if (tid == t.pid) {
        t.threads.insert(t.threads.begin(), std::move(tr));
        t.group_stopped.insert(t.group_stopped.begin(), stopped);
      } else {
        t.threads.push_back(std::move(tr));
        t.group_stopped.push_back(stopped);
      }
      added = true;
    }
    if (!added) break;
  }
  if (t.threads.empty() || t.threads[0].tid() != t.pid)
    throw Error("the thread group leader is gone (zombie leader)");
}

}  // namespace

void seize_tree(DumpContext& ctx, pid_t root) {
  if (root == getpid()) throw Error("cannot dump ckpt itself");
  std::deque<std::pair<pid_t, pid_t>> queue{{root, 0}};
  while (!queue.empty()) {
    auto [pid, ppid] = queue.front();
    queue.pop_front();
    cancel::check();
    in_context(strfmt("pid %d", pid), [&] {
      proc::Stat st;
      std::string text;
      if (!try_read_file(strfmt("/proc/%d/stat", pid), &text))
        throw Error(pid == root ? "no such process" : "the process exited during the dump");
      st = proc::parse_stat(text);
      if (st.state == 'Z' || st.state == 'X') {
        // Exited, its parent (stopped now) has not reaped it: what the
        // parent will read is all there is to save.
        if (ppid == 0) throw Error("the process has exited (zombie)");
        ctx.zombies.push_back({pid, ppid, st.pgrp, st.session, st.exit_code});
        return;
      }
      if (st.flags & 0x00200000 /* PF_KTHREAD */) throw Error("is a kernel thread");
      auto t = std::make_unique<DumpTask>();
      t->pid = pid;
      t->ppid = ppid;
      ctx.tasks.push_back(std::move(t));
      seize_threads(*ctx.tasks.back());
      for (pid_t c : proc::list_children(pid)) queue.emplace_back(c, pid);
    });
  }
}

void prepare_tasks(DumpContext& ctx, int cpu) {
  uint64_t vdso_off = cpu::vdso_syscall_offset();
  for (auto& tp : ctx.tasks) {
    DumpTask& t = *tp;
    in_context(strfmt("pid %d", t.pid), [&] {
      t.stat = proc::read_stat(t.pid);
      t.status = proc::read_status(t.pid);
      // A thread under seccomp would have its filter (or strict mode) judge
      // our remote syscalls: suspend it while we drive the threads (needs
      // CAP_SYS_ADMIN). Threads can differ; any one with seccomp counts.
      bool seccomp = t.status.seccomp != 0;
      for (size_t i = 1; i < t.threads.size() && !seccomp; i++) {
        std::string st;
        if (try_read_file(strfmt("/proc/%d/task/%d/status", t.pid, t.threads[i].tid()), &st))
          seccomp = proc::parse_status(st).seccomp != 0;
      }
      if (seccomp)
        for (auto& tr : t.threads)
          if (ptrace(PTRACE_SETOPTIONS, tr.tid(), nullptr,
                     kSeizeOptions | PTRACE_O_SUSPEND_SECCOMP) != 0)
            throw_errno(strfmt("tid %d: PTRACE_O_SUSPEND_SECCOMP (needs CAP_SYS_ADMIN)", tr.tid()));
      // Without walking every page if the kernel lets us (vma_flags.h).
      if (auto v = vma_flags::read(t.pid))
        t.vmas = std::move(*v);
      else
        t.vmas = proc::read_smaps(t.pid);
      for (const auto& v : t.vmas)
        if (v.path == "[vdso]") t.vdso_base = v.start;
      if (!t.vdso_base) throw Error("the process has no [vdso] mapping");
      for (auto& tr : t.threads) {
        t.regs.push_back(normalize_regs(tr.get_regs()));
        t.sigmasks.push_back(tr.get_sigmask());
      }
      // Signals arriving while we drive the threads stay pending.
      for (auto& tr : t.threads) tr.set_sigmask(~0ULL);
      // A thread resumed for a remote syscall onto an idle CPU of this VM
      // takes 1-8 ms to run its first instruction (the CPU has to be woken);
      // on ckpt's own CPU it runs as soon as ckpt waits for it.
      if (cpu >= 0)
        for (auto& tr : t.threads) {
          std::string was = affinity::get(tr.tid());
          t.affinities.push_back(affinity::set(tr.tid(), affinity::only(cpu)) ? was : "");
        }
      t.remote = std::make_unique<RemoteThread>(t.threads[0], t.vdso_base + vdso_off);
      t.scratch = RemoteScratch(*t.remote, 4096 * 4);
    });
  }
}

void map_namespace_pids(DumpContext& ctx) {
  DumpTask& root = *ctx.tasks.front();
  const std::vector<pid_t>& ns = root.status.nspid;
  size_t depth = ns.size();
  // The root's id inside its own namespace is 1 only if it is that
  // namespace's init; any other task keeps ckpt's view of the ids.
  ctx.own_pidns = depth > 1 && ns.back() == 1;
  auto inner = [&](const std::vector<pid_t>& ids, pid_t pid, const char* what) -> pid_t {
    if (!ctx.own_pidns) return pid;
    if (ids.size() != depth)
      throw Error(
          strfmt("%s %d is in a nested pid namespace (%zu levels, the root has %zu): "
                 "not supported",
                 what, pid, ids.size(), depth));
    return ids.back();
  };
  for (auto& tp : ctx.tasks) {
    DumpTask& t = *tp;
    t.vpid = inner(t.status.nspid, t.pid, "pid");
    t.vtids.clear();
    for (auto& tr : t.threads) {
      if (tr.tid() == t.pid || !ctx.own_pidns) {
        t.vtids.push_back(tr.tid() == t.pid ? t.vpid : tr.tid());
        continue;
      }
      proc::Status ts =
          proc::parse_status(read_file(strfmt("/proc/%d/task/%d/status", t.pid, tr.tid())));
      t.vtids.push_back(inner(ts.nspid, tr.tid(), "thread"));
    }
    ctx.vpids[t.pid] = t.vpid;
  }
  for (auto& z : ctx.zombies) {
    pid_t v = z.pid;
    if (ctx.own_pidns) {
      std::string text;
      if (!try_read_file(strfmt("/proc/%d/status", z.pid), &text))
        throw Error(strfmt("zombie %d vanished during the dump", z.pid));
      v = inner(proc::parse_status(text).nspid, z.pid, "zombie");
    }
    ctx.vpids[z.pid] = v;
  }
}

void thaw_tasks(DumpContext& ctx) {
  for (auto& tp : ctx.tasks) {
    DumpTask& t = *tp;
    if (t.remote) {
      try {
        t.scratch.unmap(*t.remote);
      } catch (const Error& e) {
        LOG_WARN("pid %d: %s", t.pid, e.what());
      }
    }
    for (size_t i = 0; i < t.threads.size(); i++) {
      Tracee& tr = t.threads[i];
      if (!tr.attached()) continue;
      try {
        if (i < t.sigmasks.size()) tr.set_sigmask(t.sigmasks[i]);
        if (i < t.affinities.size() && !t.affinities[i].empty() &&
            !affinity::set(tr.tid(), t.affinities[i]))
          LOG_WARN("tid %d: its CPU affinity could not be put back", tr.tid());
        if (i < t.regs.size()) tr.set_regs(t.regs[i]);
        ptrace(PTRACE_SETOPTIONS, tr.tid(), nullptr, kSeizeOptions);  // seccomp back on
        tr.detach();
      } catch (const Error& e) {
        LOG_WARN("pid %d: %s", t.pid, e.what());
      }
    }
    t.remote.reset();
  }
}

void kill_tasks(DumpContext& ctx) {
  std::vector<pid_t> tids;
  for (auto& tp : ctx.tasks) {
    ::kill(tp->pid, SIGKILL);
    tp->remote.reset();
    for (auto& tr : tp->threads) {
      tids.push_back(tr.tid());
      tr.release();
    }
  }
  // A dead tracee stays a zombie attached to its tracer until the tracer
  // collects it, and only then goes to its parent: a pid namespace's init
  // waits for all its children, so a ckpt that lives on (a migration's
  // source) would keep the container's init alive. Collected here; a task
  // that is not gone after a while is left to our exit.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!tids.empty() && std::chrono::steady_clock::now() < deadline) {
    for (size_t i = 0; i < tids.size();) {
      int st = 0;
      pid_t r = waitpid(tids[i], &st, __WALL | WNOHANG);
      bool gone =
          (r < 0 && errno == ECHILD) || (r == tids[i] && (WIFEXITED(st) || WIFSIGNALED(st)));
      if (gone) {
        tids[i] = tids.back();
        tids.pop_back();
      } else {
        i++;
      }
    }
    if (!tids.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace ckpt
