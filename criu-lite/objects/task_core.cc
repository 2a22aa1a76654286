#include "objects/task_core.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>

#include "image/record_file.h"
#include "objects/task_attrs.h"
#include "objects/thread.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"

namespace ckpt {

namespace {
struct KernelSigaction {
  uint64_t handler;
  uint64_t flags;
  uint64_t restorer;
  uint64_t mask;
};
}  // namespace

void dump_task_core(DumpContext& ctx, DumpTask& t) {
  img::TaskCore core;
  RemoteThread& rt = *t.remote;
  core.set_pid(static_cast<uint32_t>(t.vpid));
  core.set_comm(t.stat.comm);
  core.set_umask(t.status.umask);
  core.set_exit_signal(t.stat.exit_signal);
  std::string pers = read_file(strfmt("/proc/%d/personality", t.pid));
  core.set_personality(static_cast<uint32_t>(strtoul(pers.c_str(), nullptr, 16)));

  for (const auto& l : proc::read_limits(t.pid)) {
    auto* r = core.add_rlimits();
    r->set_resource(static_cast<uint32_t>(l.resource));
    r->set_cur(l.cur);
    r->set_max(l.max);
  }

  // Handlers are asked of the task only for caught signals (and SIGCHLD,
  // whose flags matter even at SIG_DFL): a remote syscall costs tens of
  // microseconds, and the rest are known from /proc: ignored or default.
  for (int sig = 1; sig <= 64; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    uint64_t bit = 1ULL << (sig - 1);
    KernelSigaction ka{};
    if ((t.status.sig_cgt & bit) || sig == SIGCHLD) {
      rt.check("rt_sigaction", __NR_rt_sigaction, sig, 0, t.scratch.addr(), 8);
      t.scratch.read(t.pid, 0, &ka, sizeof ka);
    } else if (t.status.sig_ign & bit) {
      ka.handler = reinterpret_cast<uint64_t>(SIG_IGN);
    }
    if (ka.handler == 0 && ka.flags == 0 && ka.mask == 0) continue;  // SIG_DFL
    auto* a = core.add_sigactions();
    a->set_sig(static_cast<uint32_t>(sig));
    a->set_handler(ka.handler);
    a->set_flags(ka.flags);
    a->set_restorer(ka.restorer);
    a->set_mask(ka.mask);
  }

  for (int which : {ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF}) {
    rt.check("getitimer", __NR_getitimer, which, t.scratch.addr());
    itimerval v{};
    t.scratch.read(t.pid, 0, &v, sizeof v);
    if (!v.it_value.tv_sec && !v.it_value.tv_usec && !v.it_interval.tv_sec &&
        !v.it_interval.tv_usec)
      continue;
    auto* it = core.add_itimers();
    it->set_which(static_cast<uint32_t>(which));
    it->set_interval_us(static_cast<uint64_t>(v.it_interval.tv_sec) * 1000000 +
                        static_cast<uint64_t>(v.it_interval.tv_usec));
    it->set_value_us(static_cast<uint64_t>(v.it_value.tv_sec) * 1000000 +
                     static_cast<uint64_t>(v.it_value.tv_usec));
  }

  for (auto& si : t.threads[0].peek_siginfo(true)) core.add_shared_pending()->set_raw(si);

  core.set_cwd(read_link(strfmt("/proc/%d/cwd", t.pid)));
  core.set_root(read_link(strfmt("/proc/%d/root", t.pid)));
  rt.check("prctl(PR_GET_PDEATHSIG)", __NR_prctl, PR_GET_PDEATHSIG, t.scratch.addr());
  int pdeath = 0;
  t.scratch.read(t.pid, 0, &pdeath, sizeof pdeath);
  core.set_pdeath_sig(pdeath);
  core.set_dumpable(rt.check("prctl(PR_GET_DUMPABLE)", __NR_prctl, PR_GET_DUMPABLE) != 0);
  core.set_no_new_privs(t.status.no_new_privs != 0);
  dump_task_attrs(t, &core);

  for (size_t i = 0; i < t.threads.size(); i++) {
    in_context(strfmt("thread %d", t.threads[i].tid()),
               [&] { dump_thread(t, i, core.add_threads()); });
  }
  ctx.stats.threads += static_cast<uint32_t>(t.threads.size());
  image::save_message(*ctx.sink, core_name(t.vpid), image::Kind::Core, core);
}

void restore_sigactions(RemoteThread& rt, const RemoteScratch& s, pid_t pid,
                        const img::TaskCore& core, StubHandlers inherited) {
  // Every signal is set, not only the saved ones: the task starts as a copy
  // of ckpt, whose own handlers must not survive.
  KernelSigaction acts[65] = {};
  for (const auto& a : core.sigactions()) {
    if (a.sig() < 1 || a.sig() > 64) throw Error(strfmt("sigaction for bad signal %u", a.sig()));
    acts[a.sig()] = {a.handler(), a.flags(), a.restorer(), a.mask()};
  }
  // Only where it differs from what the stub inherited from ckpt (read
  // here, no remote syscall), since remote syscalls are what costs. An
  // execve keeps only ignored signals ignored, with no flags and no mask.
  for (int sig = 1; sig <= 64; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    KernelSigaction mine{};
    // SIGTRAP is set always: single-stepped remote syscalls (sys/remote.h)
    // reset it in the stub.
    bool known = sig != SIGTRAP && syscall(SYS_rt_sigaction, sig, nullptr, &mine, 8) == 0;
    if (known && inherited == StubHandlers::after_exec)
      mine = {mine.handler == reinterpret_cast<uint64_t>(SIG_IGN) ? mine.handler : 0, 0, 0, 0};
    if (known && memcmp(&mine, &acts[sig], sizeof mine) == 0) continue;
    s.write(pid, 0, &acts[sig], sizeof(KernelSigaction));
    if (rt.call(__NR_rt_sigaction, sig, s.addr(), 0, 8) < 0 && acts[sig].handler != 0)
      throw Error(strfmt("restore the handler of signal %d", sig));
  }
}

void restore_itimers(RemoteThread& rt, const RemoteScratch& s, pid_t pid,
                     const img::TaskCore& core) {
  for (const auto& it : core.itimers()) {
    itimerval v{};
    v.it_interval.tv_sec = static_cast<time_t>(it.interval_us() / 1000000);
    v.it_interval.tv_usec = static_cast<suseconds_t>(it.interval_us() % 1000000);
    v.it_value.tv_sec = static_cast<time_t>(it.value_us() / 1000000);
    v.it_value.tv_usec = static_cast<suseconds_t>(it.value_us() % 1000000);
    if (!v.it_value.tv_sec && !v.it_value.tv_usec) v.it_value.tv_usec = 1;  // armed: fire soon
    s.write(pid, 0, &v, sizeof v);
    rt.check("setitimer", __NR_setitimer, it.which(), s.addr(), 0);
  }
}

void restore_pending(RemoteThread& rt, const RemoteScratch& s, pid_t pid, pid_t vpid, pid_t vtid,
                     const std::vector<img::SigInfo>& sigs, bool shared) {
  for (const auto& si : sigs) {
    if (si.raw().size() != sizeof(siginfo_t)) throw Error("pending signal record has a bad size");
    siginfo_t info;
    memcpy(&info, si.raw().data(), sizeof info);
    s.write(pid, 0, &info, sizeof info);
    // Queued by the task to itself, so any si_code is allowed.
    if (shared)
      rt.check("rt_sigqueueinfo", __NR_rt_sigqueueinfo, vpid, info.si_signo, s.addr());
    else
      rt.check("rt_tgsigqueueinfo", __NR_rt_tgsigqueueinfo, vpid, vtid, info.si_signo, s.addr());
  }
}

void restore_rlimits(pid_t pid, const img::TaskCore& core) {
  for (const auto& l : core.rlimits()) {
    rlimit64 want{l.cur(), l.max()};
    rlimit64 have{};
    prlimit64(pid, static_cast<__rlimit_resource>(l.resource()), nullptr, &have);
    if (have.rlim_cur == want.rlim_cur && have.rlim_max == want.rlim_max) continue;
    if (prlimit64(pid, static_cast<__rlimit_resource>(l.resource()), &want, nullptr) != 0) {
      // Raising a hard limit needs CAP_SYS_RESOURCE; keep what we can.
      if (errno == EPERM && want.rlim_max > have.rlim_max) {
        LOG_WARN("pid %d: cannot raise hard limit of rlimit %u to %llu (no CAP_SYS_RESOURCE)", pid,
                 l.resource(), static_cast<unsigned long long>(want.rlim_max));
        rlimit64 clipped{std::min(want.rlim_cur, have.rlim_max), have.rlim_max};
        prlimit64(pid, static_cast<__rlimit_resource>(l.resource()), &clipped, nullptr);
        continue;
      }
      throw_errno(strfmt("set rlimit %u", l.resource()));
    }
  }
}

void restore_task_misc(RemoteThread& rt, const img::TaskCore& core) {
  rt.check("personality", __NR_personality, core.personality());
  rt.check("prctl(PR_SET_PDEATHSIG)", __NR_prctl, PR_SET_PDEATHSIG,
           static_cast<uint64_t>(core.pdeath_sig()));
  rt.check("prctl(PR_SET_DUMPABLE)", __NR_prctl, PR_SET_DUMPABLE, core.dumpable() ? 1 : 0);
}

}  // namespace ckpt
