// epoll: its watches ("tfd: N events: HEX data: HEX ..." lines of fdinfo).
//
// An epoll item is keyed by (file, fd number): a watch must be added again
// with the fd number the process used. At dump each watch is checked with
// kcmp(KCMP_EPOLL_TFD) against the file the dumping process has at that
// number (the kernel keeps a watch on a closed fd while the file lives: not
// supported). At restore the epoll is created in the controller and the
// watches are added in the restore stub of that same process (after_install),
// once, even if several processes share the epoll.
//
// EPOLLWAKEUP needs CAP_BLOCK_SUSPEND (else the kernel drops it, as it did
// for the program); a disarmed EPOLLONESHOT watch comes back armed for
// EPOLLERR/EPOLLHUP only (epoll_ctl always adds those). Events ready at dump
// are found again by the kernel when the watch is added (level or edge).
#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <map>
#include <set>

#include "objects/fd_kind.h"
#include "sys/error.h"

namespace ckpt {

namespace {

class EpollKind : public FdKind {
 public:
  const char* name() const override { return "epoll"; }
  bool matches(const FdProbe& p) const override { return p.link == "anon_inode:[eventpoll]"; }

  void dump(const FdDumpArgs& a, img::FileDesc* d) override {
    auto* ep = d->mutable_epoll();
    ep->set_owner_pid(static_cast<uint32_t>(a.task.vpid));
    std::map<int, uint32_t> seen;  // tfd -> lines so far with that number
    for (const EpollTarget& t : parse_epoll_fdinfo(a.info)) {
      // toff: the n-th item with this fd number (same number, other files).
      kcmp_epoll_slot slot{static_cast<uint32_t>(a.fd), static_cast<uint32_t>(t.fd), seen[t.fd]++};
      long r = syscall(SYS_kcmp, a.task.pid, a.task.pid, KCMP_EPOLL_TFD, t.fd, &slot);
      if (r != 0) {
        if (r < 0 && errno != EBADF && errno != ENOENT)
          throw_errno(strfmt("kcmp epoll watch on fd %d", t.fd));
        throw Error(
            strfmt("watch on fd %d (inode %llu): epoll watch on a closed fd is not "
                   "supported (the fd was closed or now names another file)",
                   t.fd, static_cast<unsigned long long>(t.ino)));
      }
      auto* w = ep->add_watches();
      w->set_fd(static_cast<uint32_t>(t.fd));
      w->set_events(t.events);
      w->set_data(t.data);
    }
  }

  bool owns(const img::FileDesc& d) const override { return d.has_epoll(); }

  UniqueFd open(const img::FileDesc& d, FdRestoreState&) override {
    UniqueFd fd(epoll_create1(EPOLL_CLOEXEC));
    if (!fd) throw_errno("epoll_create1");
    if ((d.flags() & O_NONBLOCK) && fcntl(fd.get(), F_SETFL, O_NONBLOCK) != 0)
      throw_errno("epoll: set O_NONBLOCK");
    return fd;
  }

  bool runs_in_stub(const img::FileDesc&, const std::vector<pid_t>&) const override {
    return true;  // after_install
  }

  void after_install(const img::FdTable& table, const FdRestoreState& st) const override {
    std::set<uint32_t> done;
    for (const auto& e : table.fds()) {
      auto it = st.descs.find(e.desc_id());
      if (it == st.descs.end() || !it->second.has_epoll()) continue;
      const img::Epoll& ep = it->second.epoll();
      // Watches are added once, by the process whose fd numbers they name.
      if (ep.owner_pid() != table.pid() || !done.insert(e.desc_id()).second) continue;
      for (const auto& w : ep.watches()) {
        epoll_event ev{};
        ev.events = w.events();
        ev.data.u64 = w.data();
        if (epoll_ctl(static_cast<int>(e.fd()), EPOLL_CTL_ADD, static_cast<int>(w.fd()), &ev) != 0)
          throw_errno(
              strfmt("epoll fd %u: add watch on fd %u (events %#x)", e.fd(), w.fd(), w.events()));
      }
    }
  }
};

}  // namespace

std::vector<EpollTarget> parse_epoll_fdinfo(const proc::FdInfo& info) {
  std::vector<EpollTarget> out;
  for (const auto& [k, v] : info.extra) {
    if (k != "tfd") continue;
    EpollTarget t;
    long long pos = 0;
    unsigned long long data = 0, ino = 0;
    unsigned events = 0, sdev = 0;
    int used = -1;
    if (sscanf(v.c_str(), "%d events: %x data: %llx pos:%lli ino:%llx sdev:%x%n", &t.fd, &events,
               &data, &pos, &ino, &sdev, &used) != 6 ||
        static_cast<size_t>(used) != v.size() || t.fd < 0)
      throw Error("fdinfo: bad epoll line 'tfd: " + v + "'");
    t.events = events;
    t.data = data;
    t.ino = ino;
    t.sdev = sdev;
    out.push_back(t);
  }
  return out;
}

std::unique_ptr<FdKind> make_epoll_kind() {
  return std::make_unique<EpollKind>();
}

}  // namespace ckpt
