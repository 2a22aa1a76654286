// eventfd: the counter and EFD_SEMAPHORE, from fdinfo ("eventfd-count:",
// "eventfd-semaphore:"). Restored with eventfd(2) plus a write of the count
// (the count is 64-bit, eventfd's initial value only 32).
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "objects/fd_kind.h"
#include "sys/error.h"
#include "sys/log.h"

namespace ckpt {

namespace {

class EventFdKind : public FdKind {
 public:
  const char* name() const override { return "eventfd"; }
  bool matches(const FdProbe& p) const override { return p.link == "anon_inode:[eventfd]"; }
  void dump(const FdDumpArgs& a, img::FileDesc* d) override {
    *d->mutable_eventfd() = parse_eventfd_fdinfo(a.info);
  }
  bool owns(const img::FileDesc& d) const override { return d.has_eventfd(); }
  UniqueFd open(const img::FileDesc& d, FdRestoreState&) override {
    const img::EventFd& e = d.eventfd();
    int flags = EFD_CLOEXEC | (e.semaphore() ? EFD_SEMAPHORE : 0) |
                ((d.flags() & O_NONBLOCK) ? EFD_NONBLOCK : 0);
    UniqueFd fd(eventfd(0, flags));
    if (!fd) throw_errno("eventfd");
    if (e.count() == UINT64_MAX) throw Error("eventfd count 0xffffffffffffffff is invalid");
    if (e.count()) {
      uint64_t v = e.count();
      if (retry_eintr([&] { return write(fd.get(), &v, sizeof(v)); }) != sizeof(v))
        throw_errno(strfmt("eventfd: set count %llu", static_cast<unsigned long long>(v)));
    }
    return fd;
  }
};

}  // namespace

img::EventFd parse_eventfd_fdinfo(const proc::FdInfo& info) {
  img::EventFd e;
  bool have_count = false, have_sem = false;
  for (const auto& [k, v] : info.extra) {
    if (k == "eventfd-count") {
      e.set_count(parse_fdinfo_u64(k, v, 16));
      have_count = true;
    } else if (k == "eventfd-semaphore") {
      e.set_semaphore(parse_fdinfo_u64(k, v, 10) != 0);
      have_sem = true;
    }
  }
  if (!have_count) throw Error("fdinfo has no 'eventfd-count:' line");
  if (!have_sem)
    LOG_WARN(
        "fdinfo of an eventfd has no 'eventfd-semaphore:' line (kernel older than 6.6?): "
        "saved as a plain counter");
  return e;
}

std::unique_ptr<FdKind> make_eventfd_kind() {
  return std::make_unique<EventFdKind>();
}

}  // namespace ckpt
