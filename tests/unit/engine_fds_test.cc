// Tests for the fdinfo parsers of the anonymous-inode fd kinds (eventfd,
// signalfd, timerfd, epoll, inotify): fed with fdinfo text captured on the
// development machine (Debian 12, Linux 6.18, from tests/workloads/wl_evfds),
// with malformed lines (must throw Error), and with the live fdinfo of files
// this test makes. The restore side of the kinds (open()) is checked by
// opening a description and reading back its fdinfo.
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "objects/fd_kind.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/proc.h"

namespace ckpt {
namespace {

// Captured from /proc/PID/fdinfo/N of wl_evfds.
constexpr const char* kEventFd =
    "pos:\t0\nflags:\t02004002\nmnt_id:\t17\nino:\t1038\n"
    "eventfd-count:              3ea\neventfd-id: 1\neventfd-semaphore: 0\n";
constexpr const char* kSemFd =
    "pos:\t0\nflags:\t02004002\nmnt_id:\t17\nino:\t1038\n"
    "eventfd-count:                2\neventfd-id: 2\neventfd-semaphore: 1\n";
constexpr const char* kSignalFd =
    "pos:\t0\nflags:\t02004002\nmnt_id:\t17\nino:\t1038\nsigmask:\t0000000000000200\n";
constexpr const char* kTimerFd =
    "pos:\t0\nflags:\t02004002\nmnt_id:\t17\nino:\t1038\n"
    "clockid: 1\nticks: 0\nsettime flags: 00\nit_value: (0, 350371)\n"
    "it_interval: (0, 50000000)\n";
constexpr const char* kEpoll =
    "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\n"
    "tfd:        7 events:       19 data: 2222000000000002  pos:0 ino:40e sdev:10\n"
    "tfd:        4 events:       19 data: 1111000000000001  pos:0 ino:40e sdev:10\n"
    "tfd:        8 events:       19 data: 4444000000000004  pos:0 ino:3a97e sdev:f\n"
    "tfd:        6 events:       19 data: 3333000000000003  pos:0 ino:40e sdev:10\n";
constexpr const char* kInotify =
    "pos:\t0\nflags:\t02004000\nmnt_id:\t17\nino:\t1038\n"
    "inotify wd:3 ino:a72434 sdev:fe00000 mask:300 ignored_mask:0 fhandle-bytes:8 "
    "fhandle-type:1 f_handle:3424a700fcd8477f\n"
    "inotify wd:1 ino:a72436 sdev:fe00000 mask:300 ignored_mask:0 fhandle-bytes:8 "
    "fhandle-type:1 f_handle:3624a700917480b7\n";

proc::FdInfo info_of(const std::string& text) {
  return proc::parse_fdinfo(text);
}

proc::FdInfo live(int fd) {
  return proc::read_fdinfo(getpid(), fd);
}

TEST(EventFdInfo, Captured) {
  img::EventFd e = parse_eventfd_fdinfo(info_of(kEventFd));
  EXPECT_EQ(e.count(), 0x3eaU);
  EXPECT_FALSE(e.semaphore());
  img::EventFd s = parse_eventfd_fdinfo(info_of(kSemFd));
  EXPECT_EQ(s.count(), 2U);
  EXPECT_TRUE(s.semaphore());
}

TEST(EventFdInfo, Malformed) {
  std::string base = "pos:\t0\nflags:\t02\n";
  EXPECT_THROW(parse_eventfd_fdinfo(info_of(base)), Error);
  EXPECT_THROW(parse_eventfd_fdinfo(info_of(base + "eventfd-count: xyz\n")), Error);
  EXPECT_THROW(parse_eventfd_fdinfo(info_of(base + "eventfd-count:\n")), Error);
  EXPECT_THROW(parse_eventfd_fdinfo(info_of(base + "eventfd-count: 1\neventfd-semaphore: x\n")),
               Error);
  // Largest count: hex, 16 digits.
  img::EventFd e = parse_eventfd_fdinfo(info_of(base + "eventfd-count: fffffffffffffffe\n"));
  EXPECT_EQ(e.count(), 0xfffffffffffffffeULL);
}

TEST(SignalFdInfo, Captured) {
  EXPECT_EQ(parse_signalfd_fdinfo(info_of(kSignalFd)).mask(), 1ULL << (SIGUSR1 - 1));
  EXPECT_THROW(parse_signalfd_fdinfo(info_of("pos: 0\nflags: 02\n")), Error);
  EXPECT_THROW(parse_signalfd_fdinfo(info_of("pos: 0\nflags: 02\nsigmask: 12g4\n")), Error);
}

TEST(TimerFdInfo, Captured) {
  img::TimerFd t = parse_timerfd_fdinfo(info_of(kTimerFd));
  EXPECT_EQ(t.clockid(), CLOCK_MONOTONIC);
  EXPECT_EQ(t.ticks(), 0U);
  EXPECT_EQ(t.settime_flags(), 0U);
  EXPECT_EQ(t.value_ns(), 350371U);
  EXPECT_EQ(t.interval_ns(), 50000000U);
}

TEST(TimerFdInfo, Malformed) {
  std::string base = "pos:\t0\nflags:\t02\nclockid: 1\nticks: 3\nsettime flags: 01\n";
  img::TimerFd t =
      parse_timerfd_fdinfo(info_of(base + "it_value: (99, 801945130)\nit_interval: (1, 0)\n"));
  EXPECT_EQ(t.ticks(), 3U);
  EXPECT_EQ(t.settime_flags(), static_cast<uint32_t>(TFD_TIMER_ABSTIME));
  EXPECT_EQ(t.value_ns(), 99801945130ULL);
  EXPECT_EQ(t.interval_ns(), 1000000000ULL);
  EXPECT_THROW(parse_timerfd_fdinfo(info_of(base + "it_value: (99, 8)\n")), Error);
  EXPECT_THROW(parse_timerfd_fdinfo(info_of(base + "it_value: 99\nit_interval: (1, 0)\n")), Error);
  EXPECT_THROW(
      parse_timerfd_fdinfo(info_of(base + "it_value: (1, 1000000000)\nit_interval: (1, 0)\n")),
      Error);
  EXPECT_THROW(parse_timerfd_fdinfo(info_of(base + "it_value: (1, 2) x\nit_interval: (1, 0)\n")),
               Error);
}

TEST(EpollInfo, Captured) {
  auto ts = parse_epoll_fdinfo(info_of(kEpoll));
  ASSERT_EQ(ts.size(), 4U);
  EXPECT_EQ(ts[0].fd, 7);
  EXPECT_EQ(ts[0].events, 0x19U);
  EXPECT_EQ(ts[0].data, 0x2222000000000002ULL);
  EXPECT_EQ(ts[0].ino, 0x40eU);
  EXPECT_EQ(ts[0].sdev, 0x10U);
  EXPECT_EQ(ts[2].fd, 8);
  EXPECT_EQ(ts[2].ino, 0x3a97eU);
  EXPECT_EQ(ts[2].sdev, 0xfU);
  EXPECT_EQ(ts[3].data, 0x3333000000000003ULL);
  // An epoll with no watches has no tfd lines.
  EXPECT_TRUE(parse_epoll_fdinfo(info_of("pos: 0\nflags: 02\n")).empty());
  // EPOLLET and EPOLLEXCLUSIVE bits, all-ones data (older captured file).
  auto t2 = parse_epoll_fdinfo(
      info_of("pos: 0\nflags: 02\n"
              "tfd:        9 events: 90000019 data: ffffffffffffffff  pos:0 ino:40e sdev:10\n"));
  ASSERT_EQ(t2.size(), 1U);
  EXPECT_EQ(t2[0].events, 0x90000019U);
  EXPECT_EQ(t2[0].data, ~0ULL);
}

TEST(EpollInfo, Malformed) {
  std::string base = "pos: 0\nflags: 02\n";
  EXPECT_THROW(parse_epoll_fdinfo(info_of(base + "tfd: 7 events: 19\n")), Error);
  EXPECT_THROW(
      parse_epoll_fdinfo(info_of(base + "tfd: x events: 19 data: 1  pos:0 ino:40e sdev:10\n")),
      Error);
  EXPECT_THROW(parse_epoll_fdinfo(
                   info_of(base + "tfd: 7 events: 19 data: 1  pos:0 ino:40e sdev:10 extra\n")),
               Error);
}

TEST(InotifyInfo, Captured) {
  auto ms = parse_inotify_fdinfo(info_of(kInotify));
  ASSERT_EQ(ms.size(), 2U);
  EXPECT_EQ(ms[0].wd, 3);
  EXPECT_EQ(ms[0].ino, 0xa72434U);
  EXPECT_EQ(ms[0].sdev, 0xfe00000U);
  EXPECT_EQ(ms[0].mask, static_cast<uint32_t>(IN_CREATE | IN_DELETE));
  EXPECT_EQ(ms[0].ignored_mask, 0U);
  EXPECT_EQ(ms[0].handle_type, 1);
  EXPECT_EQ(ms[0].handle, std::string("\x34\x24\xa7\x00\xfc\xd8\x47\x7f", 8));
  EXPECT_EQ(ms[1].wd, 1);
}

TEST(InotifyInfo, Malformed) {
  std::string base = "pos: 0\nflags: 0\n";
  // No handle (filesystem without export support): parsed, handle empty.
  auto ms = parse_inotify_fdinfo(
      info_of(base + "inotify wd:1f ino:2 sdev:fe00000 mask:100 ignored_mask:0\n"));
  ASSERT_EQ(ms.size(), 1U);
  EXPECT_EQ(ms[0].wd, 0x1f);  // wd is printed in hex
  EXPECT_TRUE(ms[0].handle.empty());
  EXPECT_THROW(parse_inotify_fdinfo(info_of(base + "inotify wd:1 ino:2\n")), Error);
  EXPECT_THROW(parse_inotify_fdinfo(
                   info_of(base + "inotify wd:1 ino:2 sdev:1 mask:1 ignored_mask:0 fhandle-bytes:8 "
                                  "fhandle-type:1 f_handle:0200\n")),
               Error);
  EXPECT_THROW(parse_inotify_fdinfo(
                   info_of(base + "inotify wd:1 ino:2 sdev:1 mask:1 ignored_mask:0 fhandle-bytes:2 "
                                  "fhandle-type:1 f_handle:02zz\n")),
               Error);
}

// --- live files, and the kinds' open() --------------------------------------

img::FileDesc desc(uint32_t flags) {
  img::FileDesc d;
  d.set_id(1);
  d.set_flags(flags);
  return d;
}

TEST(FdKindsLive, EventFdRoundTrip) {
  UniqueFd ev(eventfd(0, EFD_SEMAPHORE | EFD_NONBLOCK));
  ASSERT_TRUE(ev);
  uint64_t v = 0x1234567890ULL;  // above 32 bits: needs a write at restore
  ASSERT_EQ(write(ev.get(), &v, 8), 8);
  img::FileDesc d = desc(O_RDWR | O_NONBLOCK);
  *d.mutable_eventfd() = parse_eventfd_fdinfo(live(ev.get()));
  EXPECT_EQ(d.eventfd().count(), v);
  EXPECT_TRUE(d.eventfd().semaphore());

  FdRestoreState st;
  UniqueFd r = make_eventfd_kind()->open(d, st);
  img::EventFd back = parse_eventfd_fdinfo(live(r.get()));
  EXPECT_EQ(back.count(), v);
  EXPECT_TRUE(back.semaphore());
  EXPECT_EQ(fcntl(r.get(), F_GETFL) & O_NONBLOCK, O_NONBLOCK);
}

TEST(FdKindsLive, SignalFdRoundTrip) {
  sigset_t m;
  sigemptyset(&m);
  sigaddset(&m, SIGUSR2);
  sigaddset(&m, SIGRTMIN + 3);
  UniqueFd s(signalfd(-1, &m, 0));
  ASSERT_TRUE(s);
  img::FileDesc d = desc(O_RDWR);
  *d.mutable_signalfd() = parse_signalfd_fdinfo(live(s.get()));
  EXPECT_EQ(d.signalfd().mask(), (1ULL << (SIGUSR2 - 1)) | (1ULL << (SIGRTMIN + 3 - 1)));
  FdRestoreState st;
  UniqueFd r = make_signalfd_kind()->open(d, st);
  EXPECT_EQ(parse_signalfd_fdinfo(live(r.get())).mask(), d.signalfd().mask());
}

TEST(FdKindsLive, TimerFdTicksAndTimeLeft) {
  UniqueFd t(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK));
  ASSERT_TRUE(t);
  itimerspec its{{0, 1000}, {0, 1000}};  // 1 us period: ticks pile up
  ASSERT_EQ(timerfd_settime(t.get(), 0, &its, nullptr), 0);
  usleep(20000);
  img::FileDesc d = desc(O_RDWR | O_NONBLOCK);
  *d.mutable_timerfd() = parse_timerfd_fdinfo(live(t.get()));
  EXPECT_EQ(d.timerfd().clockid(), CLOCK_MONOTONIC);
  EXPECT_EQ(d.timerfd().interval_ns(), 1000U);
  EXPECT_GE(d.timerfd().ticks(), 1U);  // the kernel counts overruns only when read

  // A slow one-shot timer with 5 unread expirations.
  d.mutable_timerfd()->set_interval_ns(0);
  d.mutable_timerfd()->set_value_ns(3600ULL * 1000000000ULL);
  d.mutable_timerfd()->set_ticks(5);
  FdRestoreState st;
  UniqueFd r = make_timerfd_kind()->open(d, st);
  img::TimerFd back = parse_timerfd_fdinfo(live(r.get()));
  EXPECT_GT(back.value_ns(), 3599ULL * 1000000000ULL);
  uint64_t ticks = 0;
  ASSERT_EQ(read(r.get(), &ticks, 8), 8);
  EXPECT_EQ(ticks, 5U);  // TFD_IOC_SET_TICKS (CONFIG_CHECKPOINT_RESTORE); else 1
}

TEST(FdKindsLive, EpollLines) {
  UniqueFd ep(epoll_create1(0));
  UniqueFd ev(eventfd(0, 0));
  epoll_event e{};
  e.events = EPOLLIN | EPOLLET;
  e.data.u64 = 0xabcdef0123456789ULL;
  ASSERT_EQ(epoll_ctl(ep.get(), EPOLL_CTL_ADD, ev.get(), &e), 0);
  auto ts = parse_epoll_fdinfo(live(ep.get()));
  ASSERT_EQ(ts.size(), 1U);
  EXPECT_EQ(ts[0].fd, ev.get());
  EXPECT_EQ(ts[0].events, static_cast<uint32_t>(EPOLLIN | EPOLLET | EPOLLERR | EPOLLHUP));
  EXPECT_EQ(ts[0].data, 0xabcdef0123456789ULL);
}

// Restoring an inotify instance with gaps in its wds: the throwaway watches
// that skip them must give exactly the saved numbers, and leave no event.
TEST(FdKindsLive, InotifyWdGaps) {
  char tmpl[] = "/tmp/ckpt-fds-test-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  img::FileDesc d = desc(O_RDONLY | O_NONBLOCK);
  auto* in = d.mutable_inotify();
  const int wds[] = {1, 3, 4, 17};
  for (int i = 0; i < 4; i++) {
    std::string p = dir + "/d" + std::to_string(i);
    ASSERT_EQ(mkdir(p.c_str(), 0755), 0);
    auto* w = in->add_watches();
    w->set_wd(wds[i]);
    w->set_path(p);
    w->set_mask(IN_CREATE | IN_DELETE);
  }
  FdRestoreState st;
  UniqueFd r = make_inotify_kind()->open(d, st);
  auto ms = parse_inotify_fdinfo(live(r.get()));
  ASSERT_EQ(ms.size(), 4U);
  std::vector<int> got;
  for (auto& m : ms) {
    got.push_back(m.wd);
    EXPECT_EQ(m.mask, static_cast<uint32_t>(IN_CREATE | IN_DELETE));
  }
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, std::vector<int>({1, 3, 4, 17}));
  char buf[4096];
  EXPECT_EQ(read(r.get(), buf, sizeof(buf)), -1);  // no IN_IGNORED of the throwaway watches
  EXPECT_EQ(errno, EAGAIN);
  // The watches work: an event on d3 comes with wd 17.
  std::string f = dir + "/d3/x";
  UniqueFd c(::open(f.c_str(), O_CREAT | O_WRONLY, 0644));
  ASSERT_TRUE(c);
  ssize_t n = read(r.get(), buf, sizeof(buf));
  ASSERT_GT(n, 0);
  auto* ev = reinterpret_cast<inotify_event*>(buf);
  EXPECT_EQ(ev->wd, 17);
  EXPECT_STREQ(ev->name, "x");
  std::string rm = "rm -rf " + dir;
  EXPECT_EQ(system(rm.c_str()), 0);
}

}  // namespace
}  // namespace ckpt
