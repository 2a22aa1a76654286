// POSIX timers (timer_create): listed from /proc/PID/timers, their time left
// and interval read with a remote timer_gettime; restored with the same ids.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "objects/task_attrs.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"
#include "sys/uapi.h"

namespace ckpt {

namespace {

uint64_t ts_ns(const timespec& ts) {
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

timespec ns_ts(uint64_t ns) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1000000000ULL);
  ts.tv_nsec = static_cast<long>(ns % 1000000000ULL);
  return ts;
}

// "notify: signal/pid.123" -> SIGEV_SIGNAL and 123; "none/...", "thread/...";
// "/tid." adds SIGEV_THREAD_ID.
void parse_notify(const std::string& v, img::PosixTimer* pt) {
  size_t slash = v.find('/');
  size_t dot = v.find('.', slash == std::string::npos ? 0 : slash);
  if (slash == std::string::npos || dot == std::string::npos)
    throw Error("cannot parse /proc/PID/timers notify: " + v);
  std::string how = v.substr(0, slash), who = v.substr(slash + 1, dot - slash - 1);
  int notify;
  if (how == "signal")
    notify = SIGEV_SIGNAL;
  else if (how == "none")
    notify = SIGEV_NONE;
  else if (how == "thread")
    notify = SIGEV_THREAD;
  else
    throw Error("unknown POSIX timer notification: " + v);
  if (who == "tid") {
    notify |= SIGEV_THREAD_ID;
    pt->set_notify_tid(static_cast<uint32_t>(strtoul(v.c_str() + dot + 1, nullptr, 10)));
  }
  pt->set_notify(notify);
}

}  // namespace

void dump_posix_timers(DumpTask& t, img::TaskAttrs* a) {
  std::string text;
  if (!try_read_file(strfmt("/proc/%d/timers", t.pid), &text))
    return;  // no CONFIG_CHECKPOINT_RESTORE
  std::istringstream in(text);
  std::string line;
  img::PosixTimer* pt = nullptr;
  while (std::getline(in, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    std::string v = line.substr(colon + 1);
    v.erase(0, v.find_first_not_of(' '));
    if (key == "ID") {
      pt = a->add_posix_timers();
      pt->set_id(atoi(v.c_str()));
    } else if (!pt) {
      throw Error("cannot parse /proc/PID/timers: " + line);
    } else if (key == "signal") {
      // "14/0000000000000000": signal number and sigev_value.
      size_t slash = v.find('/');
      pt->set_signo(atoi(v.c_str()));
      if (slash != std::string::npos) pt->set_sival(strtoull(v.c_str() + slash + 1, nullptr, 16));
    } else if (key == "notify") {
      parse_notify(v, pt);
    } else if (key == "ClockID") {
      pt->set_clock(atoi(v.c_str()));
    }
  }
  RemoteThread& rt = *t.remote;
  for (auto& p : *a->mutable_posix_timers()) {
    // /proc shows ckpt's view of the thread id; the image holds the tree's.
    if (p.notify() & SIGEV_THREAD_ID)
      for (size_t i = 0; i < t.threads.size() && i < t.vtids.size(); i++)
        if (t.threads[i].tid() == static_cast<pid_t>(p.notify_tid())) {
          p.set_notify_tid(static_cast<uint32_t>(t.vtids[i]));
          break;
        }
    rt.check(strfmt("timer_gettime(%d)", p.id()).c_str(), __NR_timer_gettime, p.id(),
             t.scratch.addr());
    itimerspec its{};
    t.scratch.read(t.pid, 0, &its, sizeof its);
    p.set_value_ns(ts_ns(its.it_value));
    p.set_interval_ns(ts_ns(its.it_interval));
  }
}

void restore_posix_timers(RemoteThread& leader, const RemoteScratch& scratch, pid_t pid,
                          const img::TaskAttrs& a) {
  if (a.posix_timers_size() == 0) return;
  std::vector<const img::PosixTimer*> timers;
  for (const auto& p : a.posix_timers()) timers.push_back(&p);
  std::sort(timers.begin(), timers.end(),
            [](const img::PosixTimer* x, const img::PosixTimer* y) { return x->id() < y->id(); });

  // Linux 6.15+: timer_create takes the id from *timerid. Older kernels hand
  // out ids in order, so the fallback fills the gaps with dummies.
  bool with_ids = leader.call(__NR_prctl, PR_TIMER_CREATE_RESTORE_IDS,
                              PR_TIMER_CREATE_RESTORE_IDS_ON, 0, 0, 0) == 0;
  if (!with_ids) LOG_DEBUG("pid %d: no PR_TIMER_CREATE_RESTORE_IDS, creating timers in order", pid);
  constexpr size_t kEvOff = 0, kIdOff = 64, kSpecOff = 128;
  static_assert(sizeof(sigevent) <= kIdOff, "sigevent fits");
  std::vector<int> dummies;
  for (const img::PosixTimer* p : timers) {
    sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_value.sival_ptr = reinterpret_cast<void*>(p->sival());
    ev.sigev_signo = p->signo();
    ev.sigev_notify = p->notify();
    if (p->notify() & SIGEV_THREAD_ID) ev._sigev_un._tid = static_cast<int>(p->notify_tid());
    scratch.write(pid, kEvOff, &ev, sizeof ev);
    for (;;) {
      int id = p->id();
      scratch.write(pid, kIdOff, &id, sizeof id);
      leader.check(strfmt("timer_create(id %d, clock %d)", p->id(), p->clock()).c_str(),
                   __NR_timer_create, static_cast<uint64_t>(static_cast<int64_t>(p->clock())),
                   scratch.addr() + kEvOff, scratch.addr() + kIdOff);
      int got = -1;
      scratch.read(pid, kIdOff, &got, sizeof got);
      if (got == p->id()) break;
      if (with_ids || got > p->id())
        throw Error(strfmt("timer_create gave id %d instead of %d", got, p->id()));
      dummies.push_back(got);
    }
    if (p->value_ns() == 0) continue;  // disarmed
    itimerspec its{ns_ts(p->interval_ns()), ns_ts(p->value_ns())};
    scratch.write(pid, kSpecOff, &its, sizeof its);
    leader.check(strfmt("timer_settime(%d)", p->id()).c_str(), __NR_timer_settime, p->id(), 0,
                 scratch.addr() + kSpecOff, 0);
  }
  for (int id : dummies) leader.check("timer_delete", __NR_timer_delete, id);
  if (with_ids)
    leader.check("prctl(PR_TIMER_CREATE_RESTORE_IDS, OFF)", __NR_prctl, PR_TIMER_CREATE_RESTORE_IDS,
                 PR_TIMER_CREATE_RESTORE_IDS_OFF, 0, 0, 0);
}

}  // namespace ckpt
