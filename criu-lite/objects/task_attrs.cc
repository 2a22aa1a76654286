#include "objects/task_attrs.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <string>

#include "sys/affinity.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"
#include "sys/uapi.h"

namespace ckpt {

namespace {

// Policy, priority, nice and affinity of one thread, read from outside.
// mask: the thread's affinity before the dump pinned it ("": read it).
void dump_thread_sched(pid_t tid, const std::string& mask, img::ThreadAttrs* ta) {
  ckpt_sched_attr sa{};
  if (syscall(SYS_sched_getattr, tid, &sa, sizeof sa, 0) != 0) throw_errno("sched_getattr");
  ta->set_sched_policy(sa.sched_policy);
  ta->set_sched_flags(sa.sched_flags & SCHED_FLAG_RESET_ON_FORK);
  ta->set_rt_priority(sa.sched_priority);
  if (sa.sched_policy == SCHED_DEADLINE) {
    ta->set_dl_runtime(sa.sched_runtime);
    ta->set_dl_deadline(sa.sched_deadline);
    ta->set_dl_period(sa.sched_period);
  }
  // sched_getattr reports nice only for the fair policies; a real-time
  // thread keeps one too, for when it goes back.
  errno = 0;
  int nice = getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
  if (nice == -1 && errno != 0) throw_errno("getpriority");
  ta->set_nice(nice);

  ta->set_affinity(mask.empty() ? affinity::get(tid) : mask);
}

void restore_thread_sched(pid_t tid, const img::ThreadAttrs& ta) {
  ckpt_sched_attr sa{};
  sa.size = 48;  // SCHED_ATTR_SIZE_VER0: no utilization clamps
  sa.sched_policy = ta.sched_policy();
  sa.sched_flags = ta.sched_flags() & SCHED_FLAG_RESET_ON_FORK;
  sa.sched_nice = ta.nice();
  sa.sched_priority = ta.rt_priority();
  sa.sched_runtime = ta.dl_runtime();
  sa.sched_deadline = ta.dl_deadline();
  sa.sched_period = ta.dl_period();
  if (syscall(SYS_sched_setattr, tid, &sa, 0) != 0)
    throw_errno(strfmt("sched_setattr(policy %u, priority %u, nice %d)", ta.sched_policy(),
                       ta.rt_priority(), ta.nice()));
  if (setpriority(PRIO_PROCESS, static_cast<id_t>(tid), ta.nice()) != 0)
    throw_errno(strfmt("setpriority(%d)", ta.nice()));
  const std::string& mask = ta.affinity();
  // The CPUs of the dump may not exist (or be allowed by the cpuset) here.
  if (!mask.empty() && !affinity::set(tid, mask))
    LOG_WARN("tid %d: CPU affinity not restored (no allowed CPU of the saved mask here)", tid);
}

}  // namespace

void dump_task_attrs(DumpTask& t, img::TaskCore* core) {
  auto* a = core->mutable_attrs();
  std::string oom = read_file(strfmt("/proc/%d/oom_score_adj", t.pid));
  a->set_oom_score_adj(atoi(oom.c_str()));

  RemoteThread& rt = *t.remote;
  rt.check("prctl(PR_GET_CHILD_SUBREAPER)", __NR_prctl, PR_GET_CHILD_SUBREAPER, t.scratch.addr());
  int subreaper = 0;
  t.scratch.read(t.pid, 0, &subreaper, sizeof subreaper);
  a->set_child_subreaper(subreaper != 0);

  for (size_t i = 0; i < t.threads.size(); i++) {
    pid_t tid = t.threads[i].tid();
    auto* ta = a->add_threads();
    ta->set_tid(static_cast<uint32_t>(i < t.vtids.size() ? t.vtids[i] : tid));
    in_context(strfmt("thread %d", tid), [&] {
      dump_thread_sched(tid, i < t.affinities.size() ? t.affinities[i] : std::string(), ta);
      std::unique_ptr<RemoteThread> local;
      if (i != 0) local = std::make_unique<RemoteThread>(t.threads[i], rt.syscall_ip());
      RemoteThread& trt = i == 0 ? rt : *local;
      ta->set_timerslack_ns(trt.check("prctl(PR_GET_TIMERSLACK)", __NR_prctl, PR_GET_TIMERSLACK));
    });
  }
  in_context("POSIX timers", [&] { dump_posix_timers(t, a); });
  in_context("seccomp", [&] { dump_seccomp(t, a); });
}

void restore_task_attrs(RemoteThread& leader, std::vector<Tracee>& threads,
                        const RemoteScratch& scratch, pid_t pid, const img::TaskCore& core) {
  const auto& a = core.attrs();
  // Written from outside: lowering it needs CAP_SYS_RESOURCE in the task,
  // which the task may not have once its credentials are back.
  std::string v = std::to_string(a.oom_score_adj()) + "\n";
  UniqueFd f = open_or_throw(strfmt("/proc/%d/oom_score_adj", pid), O_WRONLY);
  write_full(f.get(), v.data(), v.size(), "oom_score_adj");

  if (a.child_subreaper())
    leader.check("prctl(PR_SET_CHILD_SUBREAPER)", __NR_prctl, PR_SET_CHILD_SUBREAPER, 1);

  // Images without per-thread attributes (older dumps) keep what the stub had.
  if (a.threads_size() != 0 && a.threads_size() != static_cast<int>(threads.size()))
    throw Error(
        strfmt("%d thread attribute records for %zu threads", a.threads_size(), threads.size()));
  for (size_t i = 0; i < static_cast<size_t>(a.threads_size()); i++) {
    const img::ThreadAttrs& ta = a.threads(static_cast<int>(i));
    pid_t tid = threads[i].tid();
    if (ta.tid() != core.threads(static_cast<int>(i)).tid())
      throw Error(strfmt("thread attributes of tid %u found for tid %u", ta.tid(),
                         core.threads(static_cast<int>(i)).tid()));
    in_context(strfmt("thread %d", tid), [&] {
      // Timer slack first: a real-time policy zeroes it (and then it is 0
      // in the image too), a fair one keeps it.
      if (ta.timerslack_ns() != 0) {
        std::unique_ptr<RemoteThread> local;
        if (i != 0) local = std::make_unique<RemoteThread>(threads[i], leader.syscall_ip());
        RemoteThread& trt = i == 0 ? leader : *local;
        trt.check("prctl(PR_SET_TIMERSLACK)", __NR_prctl, PR_SET_TIMERSLACK, ta.timerslack_ns());
      }
      restore_thread_sched(tid, ta);
    });
  }
  in_context("POSIX timers", [&] { restore_posix_timers(leader, scratch, pid, a); });
}

void restore_task_attrs_last(std::vector<Tracee>& threads, uint64_t syscall_ip, pid_t pid,
                             const img::TaskCore& core) {
  in_context("seccomp", [&] { restore_seccomp(threads, syscall_ip, pid, core.attrs()); });
}

}  // namespace ckpt
