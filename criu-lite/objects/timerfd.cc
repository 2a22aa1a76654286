// timerfd: clock, interval, time left, settime flags and unread expirations,
// from fdinfo ("clockid:", "ticks:", "settime flags:", "it_value:",
// "it_interval:").
//
// fdinfo gives the time LEFT to the next expiry, also for TFD_TIMER_ABSTIME
// timers: every timer is restored to expire that long after the restore (an
// absolute timer is set as absolute, at now + time left, so that
// TFD_TIMER_CANCEL_ON_SET keeps working). Unread expirations are put back
// with the TFD_IOC_SET_TICKS ioctl (CONFIG_CHECKPOINT_RESTORE); without it
// the timer is made to expire 1 ns after the restore, so the program sees
// one expiration (not the exact count). See docs/limits.md.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/timerfd.h>
#include <time.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>

#include "objects/fd_kind.h"
#include "sys/error.h"
#include "sys/log.h"

#ifndef TFD_IOC_SET_TICKS
#define TFD_IOC_SET_TICKS _IOW('T', 0, uint64_t)  // linux/timerfd.h clashes with glibc's
#endif

namespace ckpt {

namespace {

constexpr uint64_t kNs = 1000000000ULL;

timespec to_ts(uint64_t ns) {
  return timespec{static_cast<time_t>(ns / kNs), static_cast<long>(ns % kNs)};
}

// "(99, 801945130)" -> ns
uint64_t parse_pair(const std::string& key, const std::string& v) {
  long long sec = -1, nsec = -1;
  int used = 0;
  if (sscanf(v.c_str(), "(%lld , %lld )%n", &sec, &nsec, &used) != 2 ||
      static_cast<size_t>(used) != v.size() || sec < 0 || nsec < 0 ||
      nsec >= static_cast<long long>(kNs))
    throw Error("fdinfo: " + key + ": bad value '" + v + "'");
  return static_cast<uint64_t>(sec) * kNs + static_cast<uint64_t>(nsec);
}

class TimerFdKind : public FdKind {
 public:
  const char* name() const override { return "timerfd"; }
  bool matches(const FdProbe& p) const override { return p.link == "anon_inode:[timerfd]"; }
  void dump(const FdDumpArgs& a, img::FileDesc* d) override {
    *d->mutable_timerfd() = parse_timerfd_fdinfo(a.info);
  }
  bool owns(const img::FileDesc& d) const override { return d.has_timerfd(); }

  UniqueFd open(const img::FileDesc& d, FdRestoreState&) override {
    const img::TimerFd& t = d.timerfd();
    if (t.ticks() && set_ticks_supported_) {
      UniqueFd fd = create(d, false);
      uint64_t ticks = t.ticks();
      if (ioctl(fd.get(), TFD_IOC_SET_TICKS, &ticks) == 0) return fd;
      if (errno != ENOTTY && errno != EINVAL) throw_errno("timerfd: set ticks");
      // Kernel without CONFIG_CHECKPOINT_RESTORE: fall back, once for all.
      LOG_WARN(
          "timerfd: TFD_IOC_SET_TICKS not supported; unread expirations come back "
          "as one expiry 1 ns after the restore");
      set_ticks_supported_ = false;
    }
    return create(d, t.ticks() != 0);
  }

 private:
  // A timer armed as saved; with expire_now, it first expires after 1 ns.
  static UniqueFd create(const img::FileDesc& d, bool expire_now) {
    const img::TimerFd& t = d.timerfd();
    int cflags = TFD_CLOEXEC | ((d.flags() & O_NONBLOCK) ? TFD_NONBLOCK : 0);
    UniqueFd fd(timerfd_create(t.clockid(), cflags));
    if (!fd) throw_errno(strfmt("timerfd_create clock %d", t.clockid()));

    uint64_t value = t.value_ns();
    // An expired periodic timer shows 0 left (the kernel moves it forward
    // only when read); 0 would disarm it: the next expiry is one interval on.
    if (value == 0 && t.interval_ns() != 0) value = t.interval_ns();
    if (expire_now) value = 1;
    if (value == 0) return fd;  // disarmed

    itimerspec its{};
    its.it_interval = to_ts(t.interval_ns());
    int sflags = 0;
    if (t.settime_flags() & TFD_TIMER_ABSTIME) {
      timespec now{};
      if (clock_gettime(t.clockid(), &now) != 0)
        throw_errno(strfmt("clock_gettime clock %d", t.clockid()));
      its.it_value = to_ts(static_cast<uint64_t>(now.tv_sec) * kNs +
                           static_cast<uint64_t>(now.tv_nsec) + value);
      sflags = static_cast<int>(t.settime_flags() & (TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET));
    } else {
      its.it_value = to_ts(value);
    }
    if (timerfd_settime(fd.get(), sflags, &its, nullptr) != 0) throw_errno("timerfd_settime");
    return fd;
  }

  bool set_ticks_supported_ = true;
};

}  // namespace

img::TimerFd parse_timerfd_fdinfo(const proc::FdInfo& info) {
  img::TimerFd t;
  unsigned have = 0;
  for (const auto& [k, v] : info.extra) {
    if (k == "clockid") {
      t.set_clockid(static_cast<int32_t>(parse_fdinfo_u64(k, v, 10)));
      have |= 1;
    } else if (k == "ticks") {
      t.set_ticks(parse_fdinfo_u64(k, v, 10));
      have |= 2;
    } else if (k == "settime flags") {
      t.set_settime_flags(static_cast<uint32_t>(parse_fdinfo_u64(k, v, 8)));
      have |= 4;
    } else if (k == "it_value") {
      t.set_value_ns(parse_pair(k, v));
      have |= 8;
    } else if (k == "it_interval") {
      t.set_interval_ns(parse_pair(k, v));
      have |= 16;
    }
  }
  if (have != 31)
    throw Error(
        "timerfd fdinfo lacks one of clockid, ticks, settime flags, it_value, "
        "it_interval");
  return t;
}

std::unique_ptr<FdKind> make_timerfd_kind() {
  return std::make_unique<TimerFdKind>();
}

}  // namespace ckpt
